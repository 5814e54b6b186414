"""The REST API as services see it: the official openai SDK and raw HTTP against daphne."""

import json
import re
import time
from datetime import timedelta
from typing import Any

import openai
import pytest
from django.utils import timezone

from routing.models import ServiceKey
from tests.personas import Client, ModelFactory, make_client, record_for
from tests.processes import Process, http, wait_until

pytestmark = pytest.mark.embedded

CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hello there"}]}


def sdk(gateway: Process, client: Client) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=client.key, max_retries=0)


def test_openai_sdk_gets_a_completion_and_the_request_is_recorded(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("")
    raw = sdk(gateway, alice).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hello there"}], user="u-1"
    )
    completion = raw.parse()

    assert completion.choices[0].message.content == f"Echo from {model}-ep0-model: hello there"
    assert completion.usage is not None and completion.usage.prompt_tokens == 2
    record = record_for(raw.headers["x-request-id"])
    assert record.outcome == "success" and record.status_code == 200
    assert record.service_key_name == "alice-service"
    assert (record.model, record.endpoint, record.attempts, record.fallbacks) == (
        model,
        f"{model}-ep0",
        1,
        0,
    )
    assert (record.tokens_in, record.tokens_out) == (2, 5)
    # Prices are $1 / $2 per 1M tokens: 2 * 1 + 5 * 2 = 12 millionths of a dollar.
    assert record.cost_usd == pytest.approx(12e-6)
    assert record.latency_ms >= record.upstream_latency_ms > 0
    assert record.overhead_ms == pytest.approx(
        record.latency_ms - record.upstream_latency_ms, abs=0.01
    )


def test_openai_sdk_streams_and_honours_include_usage(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("")
    client = sdk(gateway, alice)
    messages = [{"role": "user", "content": "stream me please"}]

    chunks = list(client.chat.completions.create(
        model=model, messages=messages, stream=True, stream_options={"include_usage": True}
    ))  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"Echo from {model}-ep0-model: stream me please"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6

    plain = list(client.chat.completions.create(model=model, messages=messages, stream=True))
    assert all(chunk.usage is None for chunk in plain)
    assert plain[-1].choices[0].finish_reason == "stop"


def test_stream_ends_with_done_and_records_tokens_even_without_include_usage(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("")
    reply = http(f"{gateway.url}/v1/chat/completions", method="POST", key=alice.key,
                 body={**CHAT, "model": model, "stream": True})  # fmt: skip

    assert reply.headers["content-type"].startswith("text/event-stream")
    assert reply.headers["cache-control"] == "no-cache"
    assert reply.body.endswith(b"data: [DONE]\n\n")
    assert b'"usage"' not in reply.body
    record = record_for(reply.headers["x-request-id"])
    assert record.stream and (record.tokens_in, record.tokens_out) == (2, 5)


def test_a_slow_stream_reaches_the_client_chunk_by_chunk_as_upstream_sends_it(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("delay/150")  # 150 ms before each word
    stream = sdk(gateway, alice).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "slowly now"}], stream=True
    )
    arrivals = [(time.monotonic(), chunk) for chunk in stream]

    words = [
        c.choices[0].delta.content for _, c in arrivals if c.choices and c.choices[0].delta.content
    ]
    assert "".join(words) == f"Echo from {model}-ep0-model: slowly now"
    assert len(words) == 5  # one event per upstream chunk, none merged or held back
    first_word_at = next(t for t, c in arrivals if c.choices and c.choices[0].delta.content)
    assert arrivals[-1][0] - first_word_at > 0.45  # the first word came before the rest existed
    assert all(chunk.usage is None for _, chunk in arrivals)


def test_models_lists_only_the_models_a_key_may_use(
    gateway: Process, alice: Client, bob: Client, model_with: ModelFactory
) -> None:
    shared = model_with("")
    bob_only = model_with("", model_name="bob-only")

    alice_models = {m.id for m in sdk(gateway, alice).models.list()}
    bob_models = {m.id for m in sdk(gateway, bob).models.list()}

    assert {shared, bob_only} <= alice_models
    assert bob_models == {"bob-only"}


def test_bare_paths_without_v1_are_served_too(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("")
    reply = http(f"{gateway.url}/chat/completions", method="POST", key=alice.key,
                 body={**CHAT, "model": model})  # fmt: skip
    assert reply.status == 200
    assert http(f"{gateway.url}/models", key=alice.key).status == 200


def test_incoming_request_id_is_kept_and_returned(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("")
    reply = http(f"{gateway.url}/v1/chat/completions", method="POST", key=alice.key,
                 body={**CHAT, "model": model}, headers={"X-Request-Id": "trace-123"})  # fmt: skip
    assert reply.headers["x-request-id"] == "trace-123"
    assert record_for("trace-123").outcome == "success"


def test_fresh_request_ids_are_unique_and_sort_by_time(gateway: Process, alice: Client) -> None:
    # Time-ordered ids go to the end of the records' request_id index.
    ids = []
    for _ in range(3):
        reply = http(f"{gateway.url}/v1/models", key=alice.key)
        ids.append(reply.headers["x-request-id"])
        time.sleep(0.002)
    assert len(set(ids)) == 3 and ids == sorted(ids)
    assert all(re.fullmatch(r"req_[0-9a-f]{32}", request_id) for request_id in ids)


@pytest.mark.parametrize(
    ("auth", "code"),
    [
        (None, "missing_api_key"),
        ("Basic abc", "missing_api_key"),
        ("Bearer bm-not-a-real-key-at-all", "invalid_api_key"),
    ],
)
def test_requests_without_a_valid_key_get_401_and_a_record(
    gateway: Process, alice: Client, auth: str | None, code: str
) -> None:
    headers = {"Authorization": auth} if auth else {}
    reply = http(f"{gateway.url}/v1/chat/completions", method="POST", body=CHAT, headers=headers)

    assert reply.status == 401
    assert reply.json()["error"]["code"] == code
    assert reply.json()["error"]["type"] == "authentication_error"
    record = record_for(reply.headers["x-request-id"])
    assert (record.outcome, record.status_code, record.error_class) == ("auth_error", 401, code)


@pytest.mark.parametrize(
    ("auth", "tip"),
    [
        (None, "Authorization: Bearer"),
        ("Bearer bm-not-a-real-key-at-all", "start with 'bm-'"),
    ],
)
def test_a_401_tells_the_caller_what_to_do_and_shows_only_the_start_of_the_key(
    gateway: Process, alice: Client, auth: str | None, tip: str
) -> None:
    headers = {"Authorization": auth} if auth else {}
    reply = http(f"{gateway.url}/v1/chat/completions", method="POST", body=CHAT, headers=headers)

    error = reply.json()["error"]
    assert reply.status == 401 and set(error) >= {"message", "type", "param", "code"}
    assert any(tip in t for t in error["tips"]), error["tips"]
    assert any("Service keys" in t for t in error["tips"])
    assert not error["message"].endswith(("….", "..")), error["message"]
    assert "not-a-real-key" not in error["message"]


def test_sdk_raises_authentication_error_for_a_wrong_key(gateway: Process, alice: Client) -> None:
    wrong = Client("nobody", "bm-wrong", 0)
    with pytest.raises(openai.AuthenticationError) as raised:
        sdk(gateway, wrong).chat.completions.create(**CHAT)
    assert raised.value.body["code"] == "invalid_api_key"


def test_a_revoked_key_stops_working_within_seconds(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("")
    client = sdk(gateway, alice)
    client.chat.completions.create(model=model, messages=CHAT["messages"])

    ServiceKey.objects.get(pk=alice.key_id).revoke()

    def refusal() -> Any:
        try:
            client.chat.completions.create(model=model, messages=CHAT["messages"])
        except openai.AuthenticationError as error:
            return error.body if error.body["code"] == "revoked_api_key" else None
        return None

    error = wait_until(refusal, timeout_s=5)
    assert any("Service keys" in tip for tip in error["tips"])  # where a new key comes from


def test_an_expired_key_is_refused(gateway: Process, transactional_db: None) -> None:
    expired = make_client("old-service", expires_at=timezone.now() - timedelta(minutes=1))

    def refused() -> bool:
        reply = http(f"{gateway.url}/v1/models", key=expired.key)
        return reply.status == 401 and reply.json()["error"]["code"] == "expired_api_key"

    wait_until(refused)


def test_unknown_model_is_404_with_a_hint(gateway: Process, alice: Client) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        sdk(gateway, alice).chat.completions.create(
            model="no-such-model", messages=CHAT["messages"]
        )
    assert raised.value.body["code"] == "model_not_found"
    assert "/v1/models" in raised.value.body["message"]
    assert raised.value.body["param"] == "model"


def test_a_model_outside_the_allow_list_looks_like_one_that_does_not_exist(
    gateway: Process, bob: Client, model_with: ModelFactory
) -> None:
    model = model_with("")
    bodies = []
    for name in (model, "no-such-model"):
        with pytest.raises(openai.NotFoundError) as raised:
            sdk(gateway, bob).chat.completions.create(model=name, messages=CHAT["messages"])
        assert isinstance(raised.value.body, dict)
        bodies.append(
            {**raised.value.body, "message": raised.value.body["message"].replace(name, "X")}
        )

    assert bodies[0] == bodies[1]  # a limited key cannot tell which models exist
    assert bodies[0]["code"] == "model_not_found" and bodies[0]["param"] == "model"
    assert "does not exist or this key may not use it" in bodies[0]["message"]


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        (b"{not json", "invalid_json", None),
        (b"[1, 2]", "invalid_request", None),
        (json.dumps({"messages": CHAT["messages"]}).encode(), "invalid_request", "model"),
        (json.dumps({"model": "demo", "messages": []}).encode(), "invalid_request", "messages"),
        (json.dumps({"model": "demo", "messages": [{"role": "wizard", "content": "x"}]}).encode(),
         "invalid_request", "messages[0].role"),
        (json.dumps({"model": "demo", "messages": [{"role": "user", "content": []}]}).encode(),
         "invalid_request", "messages[0].content"),
        (json.dumps({"model": "demo", "messages": [{"role": "user", "content": ["What is X?"]}]})
         .encode(), "invalid_request", "messages[0].content[0]"),
        (json.dumps({"model": "demo", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Hi"}, {"type": "text", "txt": "What is X?"}]}]}).encode(),
         "invalid_request", "messages[0].content[1]"),
        (json.dumps({"model": "demo", "messages": [{"role": "user", "content": [
            {"text": "What is X?"}]}]}).encode(), "invalid_request", "messages[0].content[0]"),
        (json.dumps({"model": "demo", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": "http://x/cat.png"}]}]}).encode(),
         "invalid_request", "messages[0].content[0]"),
        (json.dumps({"model": "demo", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"detail": "low"}}]}]}).encode(),
         "invalid_request", "messages[0].content[0]"),
        (json.dumps({"model": "demo", "messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "AAAA"}}]}]}).encode(),
         "invalid_request", "messages[0].content[0]"),
        (json.dumps({"model": "demo", "messages": [{"role": "user", "content": [
            {"type": "file"}]}]}).encode(), "invalid_request", "messages[0].content[0]"),
        (json.dumps({**CHAT, "temperature": 7}).encode(), "invalid_request", "temperature"),
        (json.dumps({**CHAT, "stream": "yes"}).encode(), "invalid_request", "stream"),
        (json.dumps({**CHAT, "api_base": "http://evil.example"}).encode(), "forbidden_field",
         "api_base"),
        (json.dumps({**CHAT, "base_url": "http://evil.example"}).encode(), "forbidden_field",
         "base_url"),
        (json.dumps({**CHAT, "api_key": "sk-mine"}).encode(), "forbidden_field", "api_key"),
    ],
)  # fmt: skip
def test_bad_bodies_get_400_with_the_offending_param_and_a_record(
    gateway: Process, alice: Client, body: bytes, code: str, param: str | None
) -> None:
    reply = http(f"{gateway.url}/v1/chat/completions", method="POST", key=alice.key, body=body)

    assert reply.status == 400
    error = reply.json()["error"]
    assert (error["code"], error["param"], error["type"]) == (code, param, "invalid_request_error")
    record = record_for(reply.headers["x-request-id"])
    assert (record.outcome, record.status_code, record.error_class) == ("client_error", 400, code)


def test_unknown_fields_are_accepted_and_ignored(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("")
    body = {**CHAT, "model": model, "metadata": {"team": "x"}, "vendor_extra": 1}
    reply = http(f"{gateway.url}/v1/chat/completions", method="POST", key=alice.key, body=body)
    assert reply.status == 200


def test_well_formed_content_parts_are_accepted(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("")
    parts = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
        {"type": "file", "file": {"file_id": "file-abc"}},
    ]
    body = {"model": model, "messages": [{"role": "user", "content": parts}]}
    reply = http(f"{gateway.url}/v1/chat/completions", method="POST", key=alice.key, body=body)
    assert reply.status == 200


def test_oversized_body_is_refused_with_413_before_it_is_read(
    gateway: Process, alice: Client
) -> None:
    huge = json.dumps({**CHAT, "messages": [{"role": "user", "content": "x" * 5_000_000}]})
    reply = http(f"{gateway.url}/v1/chat/completions", method="POST", key=alice.key,
                 body=huge.encode())  # fmt: skip

    assert reply.status == 413
    assert reply.json()["error"]["code"] == "body_too_large"
    assert record_for(reply.headers["x-request-id"]).status_code == 413


def test_wrong_method_and_unknown_path_are_clear_errors(gateway: Process, alice: Client) -> None:
    assert http(f"{gateway.url}/v1/chat/completions", key=alice.key).status == 405
    reply = http(f"{gateway.url}/v1/embeddingz", key=alice.key)
    assert reply.status == 404 and reply.json()["error"]["code"] == "path_not_found"
    assert "x-request-id" in reply.headers


def test_a_nul_character_in_the_request_still_gets_an_answer_and_a_record(
    gateway: Process, alice: Client
) -> None:
    """Postgres text cannot hold NUL: the record must still be written (and the other
    records of its batch with it)."""
    body = json.dumps({"model": "no\u0000such", "messages": CHAT["messages"]}).encode()
    reply = http(f"{gateway.url}/v1/chat/completions", method="POST", key=alice.key, body=body)

    assert reply.status == 404
    record = record_for(reply.headers["x-request-id"])
    assert (record.status_code, record.error_class) == (404, "model_not_found")
    assert "\u0000" not in record.model
