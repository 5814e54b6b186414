"""What makes two requests the same: the exact key and the semantic partition.

The exact key covers the namespace, the model name and the upstream behind it, every
message and every parameter that can change the output. The semantic partition covers the
same except the last turn, which is compared by similarity: system prompts and earlier
turns are part of the partition (matched exactly). Only fields known not to change the
output are left out; an unknown field is part of the key, so a new OpenAI parameter can
never make two different requests collide.
"""

import hashlib
from dataclasses import dataclass
from typing import Any

from beastmode.lib import fastjson

# Fields that do not change what the model answers.
NON_OUTPUT_FIELDS = frozenset(
    {"model", "messages", "stream", "stream_options", "user", "metadata", "store", "cache"}
)
_TOOL_ROLES = frozenset({"tool", "function"})
# System prompts are matched exactly (they are part of the partition), not by similarity:
# they are often long, and the embedder reads only the first MAX_TOKENS tokens, so with a
# long system prompt every question would embed the same.
_INSTRUCTION_ROLES = frozenset({"system", "developer"})
# Earlier turns are matched exactly too. Embedded with the last turn, a shared history
# outweighs it: after the same first exchange, "What is its population?" and "What is its
# area?" embedded at similarity 0.97, and one was served the other's answer.


@dataclass(frozen=True)
class CacheKey:
    namespace: str
    model: str
    exact: str  # sha256 over everything that changes the output
    partition: str  # sha256 over namespace, model, parameters, system prompts, earlier turns
    conversation_text: str  # what the semantic index compares: the last turn
    semantic_eligible: bool  # False with tool calls or results, images, audio or files


SHARED_NAMESPACE_PREFIX, OWN_NAMESPACE_PREFIX = "ns:", "key:"
OWN_NAMESPACE_HASH_CHARS = 16  # of the service key's hash


def namespace_for(*, key_hash_prefix: str, shared_namespace_id: int | None) -> str:
    """A key's own namespace ('key:<hash prefix>'), unless an admin put it into a shared one
    ('ns:<primary key>'). Both name what is never reused: a shared namespace's name can be
    changed, or deleted and created again for other keys, which must not inherit its answers.
    ('ns:', not the 'shared:<name>' of old entries, which could be a number.)"""
    if shared_namespace_id is not None:
        return f"{SHARED_NAMESPACE_PREFIX}{shared_namespace_id}"
    return f"{OWN_NAMESPACE_PREFIX}{key_hash_prefix}"


def derive(namespace: str, model: str, body: dict[str, Any], upstream: str = "") -> CacheKey:
    """`upstream`: the route's primary upstream (RouteConfig.upstream), so that a model
    pointed to another upstream never serves the old one's answers."""
    messages = body.get("messages") or []
    params = {k: _number(v) for k, v in body.items() if k not in NON_OUTPUT_FIELDS}
    instructions = [m for m in messages if m.get("role") in _INSTRUCTION_ROLES]
    turns = [m for m in messages if m.get("role") not in _INSTRUCTION_ROLES]
    shared: dict[str, Any] = {
        "namespace": namespace, "model": model, "params": params, "instructions": instructions,
    }  # fmt: skip
    if upstream:
        shared["upstream"] = upstream
    if len(turns) > 1:  # (single-turn keys stay what they were before earlier turns counted)
        shared["earlier_turns"] = turns[:-1]
    partition = _digest(shared)
    exact = _digest({"partition": partition, "messages": messages})
    return CacheKey(
        namespace=namespace,
        model=model,
        exact=exact,
        partition=partition,
        conversation_text=conversation_text(turns[-1:]),
        semantic_eligible=not _has_tool_turns(messages) and not _has_non_text_parts(messages),
    )


def conversation_text(messages: list[dict[str, Any]]) -> str:
    """The turns as "role: content", one per line."""
    lines = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(
                str(part.get("text", "")) for part in content if isinstance(part, dict)
            )
        lines.append(f"{message.get('role')}: {content or ''}")
    return "\n".join(lines)


def _has_non_text_parts(messages: list[dict[str, Any]]) -> bool:
    """Images, audio, files: the conversation text (what the embedding sees) leaves them
    out, so two questions about different pictures would look the same."""
    return any(
        isinstance(part, dict) and part.get("type", "text") != "text"
        for m in messages
        if isinstance(m.get("content"), list)
        for part in m["content"]
    )


def _has_tool_turns(messages: list[dict[str, Any]]) -> bool:
    return any(
        m.get("role") in _TOOL_ROLES or m.get("tool_calls") or m.get("function_call")
        for m in messages
    )


def _number(value: Any) -> Any:
    """A top-level parameter as the upstream reads it: `temperature: 0` = `0.0`."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _digest(value: object) -> str:
    canonical = fastjson.dumps(value, sort_keys=True)
    return hashlib.sha256(canonical).hexdigest()
