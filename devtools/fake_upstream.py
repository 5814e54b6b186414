"""A fake OpenAI-compatible upstream: the demo model of `make run`, and the tests' upstream.

    python -m devtools.fake_upstream --port 9001

It answers instantly by echoing the last user message. A path prefix before /v1 picks
a failure mode, so one process serves every endpoint the tests need:

    /v1/...                       ok
    /delay/<ms>/v1/...            ok after <ms> (before headers; per chunk when streaming);
                                  another mode may follow: /delay/<ms>/length/v1/...
    /status/<code>/v1/...         that HTTP status with an OpenAI error body
    /ratelimit/<s>/v1/...         429 with Retry-After: <s>
    /flaky/<n>/<tag>/v1/...       500 for the first <n> requests with that tag, then ok
    /needkey/<key>/v1/...         401 unless the request carries "Authorization: Bearer <key>"
    /leakkey/v1/...               quotes the request's key back, as careless providers do:
                                  400 naming it without "Bearer " and "sk-" and its last 19
                                  characters; a stream gets two chunks, 50 ms later an error
                                  event doing the same
    /hang/v1/...                  accept, then never answer
    /garbage/v1/...               200 with a body that is not JSON
    /cut/v1/...                   stream: two chunks, then the connection drops
    /errorevent/<ms>/v1/...       stream: two chunks, <ms> later an error event (0: same write)
    /length/v1/...                ok, but finish_reason "length"
    /usage/<n>/v1/...             ok, but usage.prompt_tokens is <n> as sent (1e30, lots...)
    /refuse/v1/...                ok, but the model refuses (message.refusal, no content)
    GET /_stats                   requests seen per path (JSON); POST /_reset clears
    GET /_peak                    the most requests in progress at once, per path

The body steers the answer as at OpenAI: with `functions` the model calls the first one
(legacy function_call), with `logprobs: true` every token comes with its logprobs. Every
answer carries a system_fingerprint.
"""

import argparse
import asyncio
import json
import time
from collections import Counter
from typing import Any

from aiohttp import web

_seen: Counter[str] = Counter()
_active: Counter[str] = Counter()
_peak: Counter[str] = Counter()


FINGERPRINT = "fp_fake_upstream"
REFUSAL = "I'm sorry, I can't help with that."


def _answer_text(body: dict[str, Any]) -> str:
    user_turns = [m for m in body.get("messages", []) if m.get("role") == "user"]
    last = user_turns[-1].get("content", "") if user_turns else ""
    if isinstance(last, list):
        last = " ".join(part.get("text", "") for part in last if isinstance(part, dict))
    return f"Echo from {body.get('model', '?')}: {last}"


def _usage(body: dict[str, Any], text: str) -> dict[str, int]:
    prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    completion = len(text.split())
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _message(body: dict[str, Any], *, refuse: bool) -> dict[str, Any]:
    text = _answer_text(body)
    if body.get("functions"):
        call = {
            "name": body["functions"][0].get("name", ""),
            "arguments": json.dumps({"text": text}),
        }
        return {"role": "assistant", "content": None, "function_call": call}
    if refuse:
        return {"role": "assistant", "content": None, "refusal": REFUSAL}
    return {"role": "assistant", "content": text}


def _pieces(text: str) -> list[str]:
    """The text as a stream sends it: word by word, each after the first with its space."""
    return [word if index == 0 else " " + word for index, word in enumerate(text.split(" "))]


def _logprobs(field: str, pieces: list[str], first: int = 0) -> dict[str, Any]:
    """Logprobs of `pieces` (one token each) of the message's content or refusal."""
    tokens = [
        {"token": piece, "logprob": -0.25 * (first + i + 1), "bytes": list(piece.encode()),
         "top_logprobs": []}
        for i, piece in enumerate(pieces)
    ]  # fmt: skip
    return {"content": None, "refusal": None, field: tokens}


def _completion(body: dict[str, Any], finish_reason: str, *, refuse: bool) -> dict[str, Any]:
    message = _message(body, refuse=refuse)
    text_field = "refusal" if refuse else "content"
    logprobs = None
    if body.get("logprobs") and message.get(text_field):
        logprobs = _logprobs(text_field, _pieces(message[text_field]))
    return {
        "id": f"chatcmpl-{time.time_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "fake"),
        "system_fingerprint": FINGERPRINT,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": logprobs,
                "finish_reason": finish_reason,
            }
        ],
        "usage": _usage(body, _answer_text(body)),
    }


def _chunk(
    body: dict[str, Any],
    delta: dict[str, Any],
    finish: str | None,
    logprobs: dict[str, Any] | None = None,
) -> bytes:
    chunk = {
        "id": "chatcmpl-stream",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body.get("model", "fake"),
        "system_fingerprint": FINGERPRINT,
        "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def _deltas(
    body: dict[str, Any], *, refuse: bool
) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """The streamed answer, (delta, logprobs) per chunk: the role, then piece by piece."""
    message = _message(body, refuse=refuse)
    if call := message.get("function_call"):
        first = {**message, "function_call": {"name": call["name"], "arguments": ""}}
        pieces = [{"function_call": {"arguments": piece}} for piece in _pieces(call["arguments"])]
        return [(first, None)] + [(piece, None) for piece in pieces]
    field = "refusal" if refuse else "content"
    chunks: list[tuple[dict[str, Any], dict[str, Any] | None]] = [({**message, field: ""}, None)]
    for i, piece in enumerate(_pieces(message[field])):
        chunks.append(
            ({field: piece}, _logprobs(field, [piece], i) if body.get("logprobs") else None)
        )
    return chunks


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    payload = {"error": {"message": message, "type": "fake_error", "param": None, "code": None}}
    return web.json_response(payload, status=status, headers=headers)


async def _stream(
    request: web.Request,
    body: dict[str, Any],
    *,
    delay_s: float,
    cut: bool,
    finish: str,
    refuse: bool,
) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for index, (delta, logprobs) in enumerate(_deltas(body, refuse=refuse)):
        if delay_s and index:
            await asyncio.sleep(delay_s)
        if cut and index == 3:
            assert request.transport is not None
            request.transport.close()  # drop the connection mid-stream
            return response
        await response.write(_chunk(body, delta, None, logprobs))
    await response.write(_chunk(body, {}, finish))
    if (body.get("stream_options") or {}).get("include_usage"):
        usage_chunk = {
            "id": "chatcmpl-stream",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "system_fingerprint": FINGERPRINT,
            "choices": [],
            "usage": _usage(body, _answer_text(body)),
        }
        await response.write(b"data: " + json.dumps(usage_chunk).encode() + b"\n\n")
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


def _leaked_key(request: web.Request) -> str:
    """An error message quoting the request's key in pieces that dodge a naive scrub."""
    key = request.headers.get("Authorization", "").removeprefix("Bearer ")
    bare = key.removeprefix("sk-")
    return f"Incorrect API key provided: {bare}. (A key ending in ...{key[-19:]}.)"


async def _stream_failing(
    request: web.Request,
    body: dict[str, Any],
    *,
    later_s: float,
    message: str = "fake generation failure",
) -> web.StreamResponse:
    """Two chunks, then an error event (as upstreams report a failure mid-generation):
    `later_s` after them, or in the same write when 0."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    chunks = _chunk(body, {"role": "assistant", "content": ""}, None) + _chunk(
        body, {"content": "Echo"}, None
    )
    error = {"error": {"message": message, "type": "server_error"}}
    event = b"data: " + json.dumps(error).encode() + b"\n\n"
    if later_s:
        await response.write(chunks)
        await asyncio.sleep(later_s)
        await response.write(event)
    else:
        await response.write(chunks + event)
    await response.write_eof()
    return response


async def chat_completions(request: web.Request) -> web.StreamResponse:
    _seen[request.path] += 1
    _active[request.path] += 1
    _peak[request.path] = max(_peak[request.path], _active[request.path])
    try:
        return await _answer(request)
    finally:
        _active[request.path] -= 1


async def _answer(request: web.Request) -> web.StreamResponse:
    parts = [p for p in request.match_info.get("mode", "").split("/") if p]
    delay_s = 0.0
    if parts[:1] == ["delay"]:
        delay_s = int(parts[1]) / 1000
        parts = parts[2:]
        if parts:  # a mode follows: its answer (or failure) comes after the delay
            await asyncio.sleep(delay_s)
            delay_s = 0.0
    if parts[:1] == ["status"]:
        return _error(int(parts[1]), f"fake upstream status {parts[1]}")
    elif parts[:1] == ["ratelimit"]:
        return _error(429, "slow down", headers={"Retry-After": parts[1]})
    elif parts[:1] == ["flaky"] and _seen[request.path] <= int(parts[1]):
        return _error(500, "flaky upstream failed")
    elif parts[:1] == ["needkey"] and request.headers.get("Authorization") != f"Bearer {parts[1]}":
        return _error(401, "Incorrect API key provided")
    elif parts[:1] == ["leakkey"]:
        if (await request.json()).get("stream"):
            return await _stream_failing(request, {}, later_s=0.05, message=_leaked_key(request))
        return _error(400, _leaked_key(request))
    elif parts[:1] == ["hang"]:
        await asyncio.sleep(3600)
    elif parts[:1] == ["garbage"]:
        return web.Response(text="<html>not an API</html>", content_type="text/html")

    body = await request.json()
    finish = "length" if parts[:1] == ["length"] else "stop"
    if body.get("functions") and finish == "stop":
        finish = "function_call"
    refuse = parts[:1] == ["refuse"]
    if parts[:1] == ["errorevent"]:
        return await _stream_failing(request, body, later_s=int(parts[1]) / 1000)
    if body.get("stream"):
        if delay_s:
            await asyncio.sleep(delay_s)
        return await _stream(
            request, body, delay_s=delay_s, cut=parts[:1] == ["cut"], finish=finish, refuse=refuse
        )
    if delay_s:
        await asyncio.sleep(delay_s)
    completion = _completion(body, finish, refuse=refuse)
    if parts[:1] == ["usage"]:
        completion["usage"]["prompt_tokens"] = _number_or_text(parts[1])
    return web.json_response(completion)


def _number_or_text(value: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


async def list_models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})


async def stats(request: web.Request) -> web.Response:
    return web.json_response(dict(_seen))


async def peak(request: web.Request) -> web.Response:
    return web.json_response(dict(_peak))


async def reset(request: web.Request) -> web.Response:
    _seen.clear()
    _peak.clear()
    return web.json_response({})


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/_stats", stats)
    app.router.add_get("/_peak", peak)
    app.router.add_post("/_reset", reset)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post(r"/{mode:.+}/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    args = parser.parse_args()
    web.run_app(make_app(), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
