"""Retries, fallbacks, circuit breaking and the errors that say what to do, end to end.

One contract test per behaviour a caller sees; every rule behind them (how many retries,
which errors, backoff, the Retry-After cap, breaker states, the final message) is checked
on a fake clock in tests/routing/test_router_rules.py and tests/routing/test_breaker.py."""

import itertools
import json
import time

import openai
import pytest

from tests.personas import Client, ModelFactory, record_for
from tests.processes import Process, Reply, free_port, http, upstream_hits

MESSAGES = [{"role": "user", "content": "hello"}]
_questions = itertools.count()


def chat(gateway: Process, client: Client, model: str, **extra: object) -> Reply:
    # A new question every time, so that no answer comes from the cache.
    messages = [{"role": "user", "content": f"hello {next(_questions)}"}]
    body = {"model": model, "messages": messages, **extra}
    return http(f"{gateway.url}/v1/chat/completions", method="POST", key=client.key, body=body)


def error_of(reply: Reply) -> dict:
    return reply.json()["error"]


def test_upstream_401_names_model_endpoint_and_host_and_tips_about_the_key(
    gateway: Process, fake_upstream: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("status/401", api_key="sk-live-SECRET-q7Zx2Kp9Lm-123")
    reply = chat(gateway, alice, model)

    assert reply.status == 502
    error = error_of(reply)
    assert error["code"] == "upstream_auth"
    assert f"'{model}'" in error["message"] and f"'{model}-ep0'" in error["message"]
    assert f"127.0.0.1:{fake_upstream.port}" in error["message"]
    assert "HTTP 401" in error["message"]
    assert any("API key" in tip for tip in error["tips"])
    assert any("still valid" in tip for tip in error["tips"])
    assert any("permission" in tip for tip in error["tips"])
    assert "SECRET" not in reply.body.decode()
    record = record_for(reply.headers["x-request-id"])
    assert record.outcome == "upstream_error" and record.error_tips == error["tips"]
    assert "SECRET" not in record.error_message


def test_connection_refused_tips_say_check_url_server_and_network(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with(f"http://127.0.0.1:{free_port()}/v1")
    reply = chat(gateway, alice, model)

    assert reply.status == 502
    error = error_of(reply)
    assert error["code"] == "connection_refused"
    tips = " ".join(error["tips"]).lower()
    assert "base url" in tips and "running" in tips and "network" in tips


def test_dns_failure_is_named(gateway: Process, alice: Client, model_with: ModelFactory) -> None:
    model = model_with("http://no-such-host.invalid/v1")
    reply = chat(gateway, alice, model)
    assert reply.status == 502 and error_of(reply)["code"] == "dns_failure"
    assert "no-such-host.invalid" in error_of(reply)["message"]


def test_tls_to_a_plain_http_server_is_a_tls_error(
    gateway: Process, fake_upstream: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with(f"https://127.0.0.1:{fake_upstream.port}/v1")
    reply = chat(gateway, alice, model)
    assert reply.status == 502 and error_of(reply)["code"] == "tls_error"
    assert any("http://" in tip for tip in error_of(reply)["tips"])


def test_first_byte_timeout_is_504_with_tips(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("hang", first_byte_timeout_s=0.3)
    started = time.monotonic()
    reply = chat(gateway, alice, model)

    assert time.monotonic() - started < 2
    assert reply.status == 504
    error = error_of(reply)
    assert error["code"] == "first_byte_timeout"
    tips = " ".join(error["tips"]).lower()
    assert "overloaded" in tips and "timeout" in tips and "smaller" in tips


def test_the_total_timeout_bounds_all_of_an_endpoints_attempts(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("hang", first_byte_timeout_s=0.4, total_timeout_s=1, max_retries=3)
    started = time.monotonic()
    reply = chat(gateway, alice, model)

    assert reply.status == 504
    assert 0.8 <= time.monotonic() - started < 1.5  # (4 attempts with backoff took ~5 s)
    assert "retries included" in error_of(reply)["message"]


def test_total_timeout_mid_stream_ends_with_an_error_event(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("delay/200", total_timeout_s=0.5)
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=alice.key, max_retries=0)

    received: list[str] = []
    with pytest.raises(openai.APIError) as raised:
        for chunk in client.chat.completions.create(model=model, messages=MESSAGES, stream=True):
            received.append(chunk.choices[0].delta.content or "")
    assert received, "the stream started before the timeout struck"
    assert "did not finish in time" in str(raised.value)


def test_garbage_from_upstream_is_an_invalid_response(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("garbage")
    reply = chat(gateway, alice, model)
    assert reply.status == 502 and error_of(reply)["code"] == "invalid_upstream_response"
    assert any("OpenAI-compatible" in tip for tip in error_of(reply)["tips"])


def test_rate_limit_honours_retry_after_and_passes_it_on(
    gateway: Process, fake_upstream: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("ratelimit/1", max_retries=1)
    started = time.monotonic()
    reply = chat(gateway, alice, model)

    assert time.monotonic() - started >= 1.0, "waited for Retry-After before retrying"
    assert reply.status == 429
    assert reply.headers["retry-after"] == "1"
    assert error_of(reply)["type"] == "rate_limit_error"
    assert record_for(reply.headers["x-request-id"]).attempts == 2


def test_fallback_to_the_next_endpoint_when_the_primary_is_down(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with(f"http://127.0.0.1:{free_port()}/v1", "")
    reply = chat(gateway, alice, model)

    assert reply.status == 200
    assert reply.json()["model"] == f"{model}-ep1-model"
    record = record_for(reply.headers["x-request-id"])
    assert (record.endpoint, record.fallbacks) == (f"{model}-ep1", 1)
    assert record.attempt_log[0]["error_class"] == "connection_refused"


def test_when_every_endpoint_fails_the_message_covers_each(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("status/500", "status/401")
    reply = chat(gateway, alice, model)
    error = error_of(reply)

    assert error["code"] == "upstream_auth"
    assert f"{model}-ep0" in error["message"] and f"{model}-ep1" in error["message"]
    assert any("API key" in tip for tip in error["tips"])
    assert any("status page" in tip for tip in error["tips"])
    assert reply.headers["x-should-retry"] == "false", "BeastMode already retried"
    # the record (and so the endpoint's health on /monitoring) names the endpoint that failed last
    record = record_for(reply.headers["x-request-id"])
    assert (record.endpoint, record.attempts, record.fallbacks) == (f"{model}-ep1", 2, 1)


def test_an_open_circuit_is_answered_at_once_with_503_and_retry_after(
    gateway: Process, fake_upstream: Process, alice: Client, model_with: ModelFactory
) -> None:
    # Test settings: 3 consecutive failures open a circuit for 1 s.
    model = model_with("status/500")
    path = "/status/500/v1/chat/completions"
    assert chat(gateway, alice, model).status == 502
    metrics = http(f"{gateway.url}/metrics").body.decode()
    assert f'beastmode_circuit_state{{endpoint="{model}-ep0"}} 0' in metrics
    for _ in range(2):
        assert chat(gateway, alice, model).status == 502
    hits_when_open = upstream_hits(fake_upstream, path)

    reply = chat(gateway, alice, model)

    assert reply.status == 503
    assert error_of(reply)["code"] == "circuit_open"
    assert reply.headers["retry-after"] == "1"
    assert upstream_hits(fake_upstream, path) == hits_when_open, "the upstream was not called"
    assert record_for(reply.headers["x-request-id"]).attempts == 0
    metrics = http(f"{gateway.url}/metrics").body.decode()
    assert f'beastmode_circuit_state{{endpoint="{model}-ep0"}} 2' in metrics


def test_stream_falls_back_before_the_first_byte(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("status/500", "")
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=alice.key, max_retries=0)

    with client.chat.completions.with_streaming_response.create(
        model=model, messages=MESSAGES, stream=True
    ) as response:
        request_id = response.headers["x-request-id"]
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text == f"Echo from {model}-ep1-model: hello"
    assert record_for(request_id).fallbacks == 1


def test_stream_cut_after_the_first_byte_ends_with_an_error_event_and_no_fallback(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("cut", "")
    reply = http(f"{gateway.url}/v1/chat/completions", method="POST", key=alice.key,
                 body={"model": model, "messages": MESSAGES, "stream": True})  # fmt: skip

    events = [e for e in reply.body.decode().split("\n\n") if e]
    assert events[-1].startswith('data: {"error"')
    assert "stream_interrupted" in events[-1]
    assert "[DONE]" not in reply.body.decode()
    record = record_for(reply.headers["x-request-id"])
    assert (record.outcome, record.error_class, record.endpoint) == (
        "upstream_error",
        "stream_interrupted",
        f"{model}-ep0",
    )


def test_an_error_event_mid_stream_reaches_the_client_after_the_chunks_before_it(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("errorevent/200", "")  # the chunks are out before the error comes
    reply = http(f"{gateway.url}/v1/chat/completions", method="POST", key=alice.key,
                 body={"model": model, "messages": MESSAGES, "stream": True})  # fmt: skip

    *chunks, error = [e.removeprefix("data: ") for e in reply.body.decode().split("\n\n") if e]
    assert [json.loads(c)["choices"][0]["delta"]["content"] for c in chunks] == ["", "Echo"]
    assert json.loads(error)["error"]["code"] == "invalid_upstream_response"
    assert "fake generation failure" in json.loads(error)["error"]["message"]
    record = record_for(reply.headers["x-request-id"])
    assert (record.outcome, record.error_class, record.fallbacks) == (
        "upstream_error",
        "invalid_upstream_response",
        0,
    )


def test_an_error_event_that_comes_with_the_first_chunks_still_falls_back(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("errorevent/0", "")  # chunks and error in one write: nothing sent yet
    reply = http(f"{gateway.url}/v1/chat/completions", method="POST", key=alice.key,
                 body={"model": model, "messages": MESSAGES, "stream": True})  # fmt: skip

    assert reply.body.endswith(b"data: [DONE]\n\n") and b"generation failure" not in reply.body
    assert f"{model}-ep1-model".encode() in reply.body
    assert record_for(reply.headers["x-request-id"]).fallbacks == 1
