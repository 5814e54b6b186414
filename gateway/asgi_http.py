"""Minimal ASGI HTTP plumbing for the lean /v1 path: read a bounded body, send JSON or SSE."""

import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from beastmode.lib import fastjson
from beastmode.lib.errors import GatewayError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class ClientDisconnected(Exception):
    pass


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


async def read_body(scope: Scope, receive: Receive, limit_bytes: int) -> bytes:
    """The request body; GatewayError(413) as soon as it is known to exceed the limit."""
    declared = header(scope, b"content-length")
    # isascii: "²".isdigit() is true, and int("²") fails; so does int() of 5,000 digits.
    if (
        declared is not None
        and declared.isascii()
        and declared.isdigit()
        and (len(declared) > 18 or int(declared) > limit_bytes)
    ):
        raise _too_large(limit_bytes)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit_bytes:
            raise _too_large(limit_bytes)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _too_large(limit_bytes: int) -> GatewayError:
    return GatewayError(
        "body_too_large",
        f"The request body exceeds the limit of {limit_bytes} bytes "
        "(BEASTMODE_MAX_BODY_BYTES): shorten the conversation or split the request.",
    )


async def send_json(
    send: Send,
    status: int,
    payload: Any,
    headers: list[tuple[bytes, bytes]],
) -> None:
    body = fastjson.dumps(payload)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*JSON_HEADERS, *headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def error_headers(error: GatewayError) -> list[tuple[bytes, bytes]]:
    headers = list(error.headers)
    if error.retry_after_s is not None:
        headers.append((b"retry-after", str(max(1, math.ceil(error.retry_after_s))).encode()))
        headers.append((b"retry-after-ms", str(max(1, round(error.retry_after_s * 1000))).encode()))
    elif error.status != 500:
        # BeastMode already retried upstream failures; a replay would repeat the failure.
        headers.append((b"x-should-retry", b"false"))
    return headers


def sse_event(payload: Any) -> bytes:
    return b"data: " + fastjson.dumps(payload) + b"\n\n"
