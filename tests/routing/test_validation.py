"""Content parts are checked per role, as OpenAI's Chat Completions API checks them."""

from typing import Any

import pytest

from beastmode.lib.chat_request import check_chat_body
from beastmode.lib.errors import GatewayError
from tests.personas import Client, ModelFactory, record_for
from tests.processes import Process, Reply, http

pytestmark = pytest.mark.embedded

PARTS: dict[str, dict[str, Any]] = {
    "text": {"type": "text", "text": "Look at this."},
    "image_url": {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    "input_audio": {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
    "file": {"type": "file", "file": {"file_id": "file-abc"}},
    "refusal": {"type": "refusal", "refusal": "I can't help with that."},
    "image": {"type": "image", "image": {"url": "https://example.com/cat.png"}},  # not OpenAI's
}
ALLOWED = {
    "system": {"text"},
    "developer": {"text"},
    "user": {"text", "image_url", "input_audio", "file"},
    "assistant": {"text", "refusal"},
    "tool": {"text"},
}
REFUSED = [(role, kind) for role in ALLOWED for kind in PARTS if kind not in ALLOWED[role]]


def post(gateway: Process, client: Client, model: str, messages: list[dict[str, Any]]) -> Reply:
    body = {"model": model, "messages": messages}
    return http(f"{gateway.url}/v1/chat/completions", method="POST", key=client.key, body=body)


def with_parts(role: str, *kinds: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": role, "content": [PARTS[kind] for kind in kinds]}
    if role == "tool":
        message["tool_call_id"] = "call_1"
    return message


@pytest.mark.parametrize(
    ("role", "kind"), [(role, kind) for role in ALLOWED for kind in sorted(ALLOWED[role])]
)
def test_each_role_accepts_its_content_parts(
    gateway: Process, alice: Client, model_with: ModelFactory, role: str, kind: str
) -> None:
    reply = post(
        gateway, alice, model_with(""), [with_parts(role, kind), {"role": "user", "content": "go"}]
    )
    assert reply.status == 200, reply.body


@pytest.mark.parametrize(("role", "kind"), REFUSED)
def test_a_part_its_role_does_not_take_gets_400_naming_the_type_and_a_record(
    gateway: Process, alice: Client, role: str, kind: str
) -> None:
    reply = post(gateway, alice, "demo", [with_parts(role, "text", kind)])

    assert reply.status == 400
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "messages[0].content[1].type"
    assert error["message"].startswith(f"Invalid value: '{kind}'. Supported values in a '{role}'")
    record = record_for(reply.headers["x-request-id"])
    assert (record.outcome, record.status_code, record.error_class) == (
        "client_error", 400, "invalid_request",
    )  # fmt: skip
    assert record.error_message == error["message"]


def test_the_refusal_names_every_supported_value() -> None:
    with pytest.raises(GatewayError) as refused:
        check_chat_body({"model": "m", "messages": [with_parts("user", "refusal")]})
    assert refused.value.message == (
        "Invalid value: 'refusal'. Supported values in a 'user' message are: "
        "'text', 'image_url', 'input_audio', and 'file'."
    )


@pytest.mark.parametrize(
    "call",
    [
        {"tool_calls": [{"id": "call_1", "type": "function",
                         "function": {"name": "f", "arguments": "{}"}}]},
        {"function_call": {"name": "f", "arguments": "{}"}},
    ],
)  # fmt: skip
def test_an_assistant_turn_that_called_a_tool_may_have_no_content(
    gateway: Process, alice: Client, model_with: ModelFactory, call: dict[str, Any]
) -> None:
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, **call},
        {"role": "user", "content": "thanks"},
    ]
    assert post(gateway, alice, model_with(""), messages).status == 200


def test_an_assistant_turn_without_content_or_a_call_is_refused(
    gateway: Process, alice: Client
) -> None:
    reply = post(gateway, alice, "demo", [{"role": "assistant", "content": None}])
    assert reply.status == 400 and reply.json()["error"]["param"] == "messages[0].content"
    assert record_for(reply.headers["x-request-id"]).status_code == 400


def test_a_function_message_takes_a_string_not_parts(gateway: Process, alice: Client) -> None:
    message = {"role": "function", "name": "f", "content": [PARTS["text"]]}
    reply = post(gateway, alice, "demo", [message])
    assert reply.status == 400 and reply.json()["error"]["param"] == "messages[0].content"
    assert record_for(reply.headers["x-request-id"]).error_class == "invalid_request"
