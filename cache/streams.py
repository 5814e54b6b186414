"""Streams and the cache: assemble a streamed answer into one completion to store, and
replay a stored completion as a proper SSE stream.

Both directions follow the chat completions contract as the OpenAI SDK reads it: a
delta's `content`, `refusal`, `function_call` and `tool_calls` pieces concatenate into the
message, a chunk choice's `logprobs` lists concatenate into the choice's.
"""

from typing import Any

from beastmode.lib import fastjson

# On every chunk of a stream (the SDK keeps the last chunk's system_fingerprint).
_CHUNK_FIELDS = ("id", "created", "model", "system_fingerprint", "service_tier")
# Chunk fields that are not part of the completion.
_STREAM_ONLY_FIELDS = frozenset({"object", "choices", "usage", "obfuscation"})
# Delta fields assembled by name; the others are text pieces to concatenate.
_STRUCTURED_DELTA_FIELDS = frozenset({"role", "function_call", "tool_calls"})


class StreamAssembler:
    """Feed it every chunk of a stream; `completion()` is the equivalent chat.completion.

    `lossless` turns False when a delta carries a field it cannot assemble (such as
    `audio`): that completion must not be stored."""

    def __init__(self) -> None:
        self._meta: dict[str, Any] = {}
        self._choices: dict[int, dict[str, Any]] = {}
        self.usage: dict[str, Any] | None = None
        self.lossless = True

    def add(self, chunk: dict[str, Any]) -> None:
        for name, value in chunk.items():
            if name not in _STREAM_ONLY_FIELDS and value is not None:
                self._meta.setdefault(name, value)
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            self._add_choice(choice)

    def _add_choice(self, choice: dict[str, Any]) -> None:
        index = choice.get("index", 0)
        state = self._choices.setdefault(
            index,
            {"message": {"role": "assistant", "content": None, "refusal": None},
             "tool_calls": {}, "logprobs": None, "finish": None},
        )  # fmt: skip
        message = state["message"]
        delta = choice.get("delta") or {}
        if delta.get("role"):
            message["role"] = delta["role"]
        for name, value in delta.items():  # content, refusal, reasoning_content, ...
            if name in _STRUCTURED_DELTA_FIELDS or value is None:
                continue
            if not isinstance(value, str):
                self.lossless = False  # `audio`, say: not assembled, so it must not be stored
            elif value:
                message[name] = (message.get(name) or "") + value
        if delta.get("function_call"):
            merged = message.setdefault("function_call", {"name": "", "arguments": ""})
            merged["name"] += delta["function_call"].get("name") or ""
            merged["arguments"] += delta["function_call"].get("arguments") or ""
        for call in delta.get("tool_calls") or []:
            merged = state["tool_calls"].setdefault(
                call.get("index", 0),
                {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
            )
            merged["id"] = call.get("id") or merged["id"]
            merged["type"] = call.get("type") or merged["type"]
            function = call.get("function") or {}
            merged["function"]["name"] += function.get("name") or ""
            merged["function"]["arguments"] += function.get("arguments") or ""
        if logprobs := choice.get("logprobs"):
            state["logprobs"] = _joined_logprobs(state["logprobs"], logprobs)
        if choice.get("finish_reason"):
            state["finish"] = choice["finish_reason"]

    def completion(self) -> dict[str, Any]:
        choices = []
        for index in sorted(self._choices):
            state = self._choices[index]
            message = dict(state["message"])
            if state["tool_calls"]:
                message["tool_calls"] = [
                    state["tool_calls"][i] for i in sorted(state["tool_calls"])
                ]
            choices.append(
                {"index": index, "message": message, "logprobs": state["logprobs"],
                 "finish_reason": state["finish"]}
            )  # fmt: skip
        completion = {"object": "chat.completion", **self._meta, "choices": choices}
        if self.usage:
            completion["usage"] = self.usage
        return completion


def _joined_logprobs(so_far: dict[str, Any] | None, more: dict[str, Any]) -> dict[str, Any]:
    joined = dict(so_far or {"content": None, "refusal": None})
    for name in ("content", "refusal"):
        if more.get(name):
            joined[name] = (joined[name] or []) + more[name]
    return joined


def replay(completion: dict[str, Any], *, include_usage: bool) -> list[bytes]:
    """SSE events for a stored completion: per choice the whole message as one delta
    (with its logprobs), then its finish; [usage]; [DONE]."""
    meta = {
        "id": completion.get("id", "chatcmpl-cached"),
        "object": "chat.completion.chunk",
        "created": completion.get("created", 0),
        "model": completion.get("model", ""),
    }
    for name in ("system_fingerprint", "service_tier"):
        if completion.get(name) is not None:
            meta[name] = completion[name]
    # Other completion fields (`moderation`) travel once, on the first chunk.
    once = {
        k: v
        for k, v in completion.items()
        if k not in _STREAM_ONLY_FIELDS and k not in _CHUNK_FIELDS and v is not None
    }
    events = []
    for choice in completion.get("choices", []):
        message = choice.get("message") or {}
        index = choice.get("index", 0)
        delta: dict[str, Any] = {
            "role": message.get("role", "assistant"),
            "content": message.get("content"),
            **{k: v for k, v in message.items() if v is not None and k not in ("role", "content")},
        }
        if message.get("tool_calls"):
            delta["tool_calls"] = [
                {**call, "index": i} for i, call in enumerate(message["tool_calls"])
            ]
        events.append(
            {**meta, **once, "choices": [
                {"index": index, "delta": delta, "logprobs": choice.get("logprobs"),
                 "finish_reason": None},
            ]}
        )  # fmt: skip
        once = {}
        events.append(
            {
                **meta,
                "choices": [
                    {"index": index, "delta": {}, "finish_reason": choice.get("finish_reason")}
                ],
            }
        )
    if include_usage and completion.get("usage"):
        events.append({**meta, "choices": [], "usage": completion["usage"]})
    return [_event(e) for e in events] + [b"data: [DONE]\n\n"]


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + fastjson.dumps(payload) + b"\n\n"
