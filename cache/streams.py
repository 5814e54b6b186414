"""Streams and the cache: assemble a streamed answer into one completion to store, and
replay a stored completion as a proper SSE stream."""

from typing import Any

from routing import fastjson


class StreamAssembler:
    """Feed it every chunk of a stream; `completion()` is the equivalent chat.completion."""

    def __init__(self) -> None:
        self._meta: dict[str, Any] = {}
        self._choices: dict[int, dict[str, Any]] = {}
        self.usage: dict[str, Any] | None = None

    def add(self, chunk: dict[str, Any]) -> None:
        for name in ("id", "created", "model", "system_fingerprint"):
            if name in chunk and name not in self._meta:
                self._meta[name] = chunk[name]
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            self._add_choice(choice)

    def _add_choice(self, choice: dict[str, Any]) -> None:
        index = choice.get("index", 0)
        message = self._choices.setdefault(
            index, {"role": "assistant", "content": None, "tool_calls": {}, "finish": None}
        )
        delta = choice.get("delta") or {}
        if delta.get("role"):
            message["role"] = delta["role"]
        if delta.get("content"):
            message["content"] = (message["content"] or "") + delta["content"]
        for call in delta.get("tool_calls") or []:
            merged = message["tool_calls"].setdefault(
                call.get("index", 0),
                {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
            )
            merged["id"] = call.get("id") or merged["id"]
            merged["type"] = call.get("type") or merged["type"]
            function = call.get("function") or {}
            merged["function"]["name"] += function.get("name") or ""
            merged["function"]["arguments"] += function.get("arguments") or ""
        if choice.get("finish_reason"):
            message["finish"] = choice["finish_reason"]

    def completion(self) -> dict[str, Any]:
        choices = []
        for index in sorted(self._choices):
            state = self._choices[index]
            message: dict[str, Any] = {"role": state["role"], "content": state["content"]}
            if state["tool_calls"]:
                message["tool_calls"] = [
                    state["tool_calls"][i] for i in sorted(state["tool_calls"])
                ]
            choices.append({"index": index, "message": message, "finish_reason": state["finish"]})
        completion = {"object": "chat.completion", **self._meta, "choices": choices}
        if self.usage:
            completion["usage"] = self.usage
        return completion


def replay(completion: dict[str, Any], *, include_usage: bool) -> list[bytes]:
    """SSE events for a stored completion: role, content, finish, [usage], [DONE]."""
    meta = {
        "id": completion.get("id", "chatcmpl-cached"),
        "object": "chat.completion.chunk",
        "created": completion.get("created", 0),
        "model": completion.get("model", ""),
    }
    events = []
    for choice in completion.get("choices", []):
        message = choice.get("message") or {}
        index = choice.get("index", 0)
        delta: dict[str, Any] = {
            "role": message.get("role", "assistant"),
            "content": message.get("content") or "",
        }
        if message.get("tool_calls"):
            delta["tool_calls"] = [
                {**call, "index": i} for i, call in enumerate(message["tool_calls"])
            ]
        events.append(
            {**meta, "choices": [{"index": index, "delta": delta, "finish_reason": None}]}
        )
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
