"""A bare ASGI app: the floor for what any Python gateway can do under a given server.

It answers ``POST /v1/chat/completions`` with a fixed OpenAI-shaped chat completion,
or, when the body asks for ``"stream": true``, with a fixed SSE stream ending in
``data: [DONE]`` (one event per ASGI body message, like a real streaming proxy; eight
events, as many as devtools.fake_upstream sends for the benchmark's message). It
reads and parses the request body, as any gateway must, and does nothing else: no
routing, no auth, no upstream call. ``bench/gateway.py`` serves it with the same server
and flags as the gateway.

Run it alone:

    .venv/bin/uvicorn bench.bare_asgi:app --host 127.0.0.1 --port 8001 --no-access-log
    .venv/bin/daphne -v 0 -b 127.0.0.1 -p 8001 bench.bare_asgi:app
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bare",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "demo",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 9, "total_tokens": 18},
    },
    separators=(",", ":"),
).encode()


def _chunk(delta: dict[str, str], finish_reason: str | None) -> bytes:
    payload = {
        "id": "chatcmpl-bare",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "demo",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


_STREAM_EVENTS: tuple[bytes, ...] = (
    _chunk({"role": "assistant", "content": ""}, None),
    *(_chunk({"content": word}, None) for word in ("Hello!", " How", " can", " I", " help?")),
    _chunk({}, "stop"),
    b"data: [DONE]\n\n",
)

_JSON_HEADERS = [(b"content-type", b"application/json")]
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_NOT_FOUND = b'{"error":{"message":"not found","type":"invalid_request_error"}}'


async def _read_body(receive: Receive) -> bytes:
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b""
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def _respond(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    sized = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": sized})
    await send({"type": "http.response.body", "body": body})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI callable."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    body = await _read_body(receive)
    if scope["method"] != "POST" or scope["path"] != "/v1/chat/completions":
        await _respond(send, 404, _JSON_HEADERS, _NOT_FOUND)
        return
    try:
        request = json.loads(body)
    except ValueError:
        request = {}
    if not (isinstance(request, dict) and request.get("stream") is True):
        await _respond(send, 200, _JSON_HEADERS, _COMPLETION)
        return
    await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
    for event in _STREAM_EVENTS:
        await send({"type": "http.response.body", "body": event, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


application = app
