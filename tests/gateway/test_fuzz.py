"""Hostile input against the real API app, in-process: whatever a client sends, the
answer is a success or an OpenAI-style error (never a 5xx), and the request leaves
exactly one record the database accepts. The requests come from
devtools/hostile_requests.py, as bench/fuzz.py's do."""

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beastmode.lib.stored_text import storable
from devtools.hostile_requests import HostileRequest, hostile_requests
from gateway import api
from gateway.asgi_http import Message
from monitoring import recorder
from monitoring.models import RequestRecord
from routing import registry
from tests.personas import make_client, make_endpoint, make_model
from tests.processes import Process

pytestmark = pytest.mark.embedded

# Fixed and derandomized: the same examples every run, so the suite stays fast and a
# failure is reproducible; bench/fuzz.py draws 20,000 at random over HTTP.
FUZZ_SETTINGS = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


async def call_app(request: HostileRequest) -> tuple[int, dict[bytes, bytes], bytes]:
    """Drive gateway.api.app as an ASGI server would: the body in one message, then no
    disconnect; bounded in time."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": request.path,
        "raw_path": request.path.encode("utf-8", "surrogatepass"),
        "query_string": b"",
        "root_path": "",
        "headers": request.headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }
    sent: list[Message] = []
    delivered = False

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await asyncio.Event().wait()  # the client stays: never a disconnect
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    async with asyncio.timeout(20):
        await api.app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), body


@pytest.fixture
def event_loop_for_fuzz() -> Iterator[asyncio.AbstractEventLoop]:
    """One loop for every example: the router's upstream connections live on it."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def test_no_client_input_gets_a_5xx_and_every_request_leaves_one_record(
    transactional_db: None,
    fake_upstream: Process,
    event_loop_for_fuzz: asyncio.AbstractEventLoop,
) -> None:
    client = make_client("fuzz-service")
    endpoint = make_endpoint("fuzz-ep", f"{fake_upstream.url}/v1")
    make_model("fuzz-model", [endpoint])
    registry.reload()
    statuses: set[int] = set()

    @FUZZ_SETTINGS
    @given(request=hostile_requests(model="fuzz-model", key=client.key))
    def check(request: HostileRequest) -> None:
        assert api.is_api_path(request.path)
        status, headers, body = event_loop_for_fuzz.run_until_complete(call_app(request))
        statuses.add(status)
        assert status < 500, body
        if not 200 <= status < 300:
            error = json.loads(body)["error"]
            assert isinstance(error["message"], str) and error["message"]
            assert isinstance(error["type"], str) and isinstance(error["code"], str)
            assert error["param"] is None or isinstance(error["param"], str)
        request_id = headers[b"x-request-id"].decode()
        recorder.flush()
        assert RequestRecord.objects.filter(request_id=request_id).count() == 1

    check()
    # The generator reached the upstream and the checks alike.
    assert {200, 400, 401, 404, 405} <= statuses


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code", "param"),
    [
        ("POST", "/v1/chat/completions",
         {"messages": [{"role": ["user"], "content": "x"}]}, 400, "invalid_request",
         "messages[0].role"),
        ("POST", "/v1/chat/completions", {"temperature": 2.5}, 400, "invalid_request",
         "temperature"),
        ("POST", "/v1/chat/completions", {"n": 1000}, 400, "invalid_request", "n"),
        ("POST", "/v1/chat/completions", {"top_p": 10**4000}, 400, "invalid_request", "top_p"),
        ("POST", "/v1/chat/completions", {"max_tokens": 10**30}, 400, "invalid_request",
         "max_tokens"),
        ("POST", "/v1/chat/completions", {"stop": ["a", "b", "c", "d", "e"]}, 400,
         "invalid_request", "stop"),
        ("POST", "/v1/chat/completions", {"logit_bias": {"50256": -101}}, 400,
         "invalid_request", "logit_bias.50256"),
        ("POST", "/v1/chat/completions", {"seed": 1.5}, 400, "invalid_request", "seed"),
        ("POST", "/v1/chat/completions", {"model": "no-such-model"}, 404, "model_not_found",
         "model"),
        ("GET", "/v1/jobs/\x00", None, 404, "job_not_found", None),
        ("MKCALENDAR", "/v1/chat/completions", None, 405, "method_not_allowed", None),
        ("PROPPATCHXYZ", "/v1/models", None, 405, "method_not_allowed", None),
    ],
)  # fmt: skip
def test_hostile_requests_get_openai_errors_naming_the_field_and_one_storable_record(
    transactional_db: None,
    fake_upstream: Process,
    event_loop_for_fuzz: asyncio.AbstractEventLoop,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    status: int,
    code: str,
    param: str | None,
) -> None:
    client = make_client("fuzz-service")
    make_model("fuzz-model", [make_endpoint("fuzz-ep", f"{fake_upstream.url}/v1")])
    registry.reload()
    chat = {"model": "fuzz-model", "messages": [{"role": "user", "content": "hi"}]}
    raw = json.dumps({**chat, **body}).encode() if body is not None else b""
    request = HostileRequest(
        method=method,
        path=path,
        headers=[(b"authorization", f"Bearer {client.key}".encode())],
        body=raw,
    )

    got_status, headers, reply = event_loop_for_fuzz.run_until_complete(call_app(request))

    error = json.loads(reply)["error"]
    assert (got_status, error["code"], error["param"]) == (status, code, param)
    if status == 405:
        assert headers[b"allow"] in (b"POST", b"GET", b"GET, POST")
    recorder.flush()
    record = RequestRecord.objects.get(request_id=headers[b"x-request-id"].decode())
    assert record.status_code == status
    assert len(record.method) <= 8 and record.method[:3] == method[:3]
    assert "\x00" not in record.path


def test_a_lone_surrogate_in_the_model_gets_a_400_and_a_record(
    transactional_db: None, event_loop_for_fuzz: asyncio.AbstractEventLoop
) -> None:
    client = make_client("fuzz-service")
    registry.reload()
    request = HostileRequest(
        method="POST",
        path="/v1/chat/completions",
        headers=[(b"authorization", f"Bearer {client.key}".encode())],
        body=b'{"model": "m\\ud800", "messages": [{"role": "user", "content": "hi"}]}',
    )

    status, headers, reply = event_loop_for_fuzz.run_until_complete(call_app(request))

    assert status == 400 and json.loads(reply)["error"]["param"] == "model"
    recorder.flush()
    record = RequestRecord.objects.get(request_id=headers[b"x-request-id"].decode())
    assert record.model == "m\\ud800"  # the client's value, escaped


@given(st.text())
@settings(max_examples=50, derandomize=True, database=None)
def test_records_keep_any_text_escaped_within_their_columns(text: str) -> None:
    stored = storable(text, 8)
    assert len(stored) <= 8 and "\x00" not in stored
    stored.encode()  # valid UTF-8: no lone surrogate left
