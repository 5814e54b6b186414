"""Validate a chat completion body before anything is spent on it."""

import re
from dataclasses import dataclass
from typing import Any

from beastmode.lib import fastjson
from beastmode.lib.chat_parameters import check_parameters, invalid_type, json_type
from beastmode.lib.errors import GatewayError

# Fields that would let a client steer where or how BeastMode calls upstream.
FORBIDDEN_FIELDS = frozenset(
    {
        "api_base",
        "base_url",
        "api_key",
        "api_version",
        "api_type",
        "organization",
        "custom_llm_provider",
        "extra_headers",
        "headers",
        "azure_ad_token",
        "aws_access_key_id",
        "aws_secret_access_key",
        "vertex_credentials",
    }
)
ROLES = ("system", "assistant", "user", "function", "tool", "developer")  # OpenAI's order
# A JSON escape of a UTF-16 surrogate: a lone one only json.loads (the fallback) accepts.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


@dataclass(frozen=True)
class ChatRequest:
    model: str
    stream: bool
    include_usage: bool
    body: dict[str, Any]  # what goes upstream (the model name is replaced per endpoint)
    cache_field: Any = None  # BeastMode's own `cache` controls, never sent upstream


def parse_chat_request(raw: bytes, *, max_depth: int = 64) -> ChatRequest:
    """The checked request (GatewayError 400 naming what is wrong): valid JSON without
    NaN, Infinity or lone surrogates, nested at most `max_depth` levels (the body is
    level 1), then check_chat_body."""
    try:
        body = fastjson.loads(raw, finite=True)
    except RecursionError:
        raise _too_deep(max_depth) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise GatewayError("invalid_json", f"The request body is not valid JSON: {exc}.") from None
    # Cheap first: a body with fewer brackets than the limit cannot nest that deep.
    if raw.count(b"[") + raw.count(b"{") > max_depth and _depth_exceeds(body, max_depth):
        raise _too_deep(max_depth)
    if _SURROGATE_ESCAPE.search(raw) and (where := _lone_surrogate_at(body)) is not None:
        raise GatewayError(
            "invalid_request",
            f"Invalid value for '{where}': the string holds a lone UTF-16 surrogate (an "
            "escape like \\ud800 without its pair), which is not text. Send valid Unicode.",
            param=where,
        )
    return check_chat_body(body)


def model_named_in(raw: bytes) -> str:
    """The model a body names, if it names one as a string ("" otherwise): for the record
    of a request parse_chat_request refused (say, for a lone surrogate in the model)."""
    try:
        body = fastjson.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return ""
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) else ""


def _too_deep(max_depth: int) -> GatewayError:
    return GatewayError(
        "json_too_deep",
        f"The request body nests JSON more than {max_depth} levels deep "
        "(BEASTMODE_MAX_JSON_DEPTH): flatten it.",
    )


def _depth_exceeds(body: Any, max_depth: int) -> bool:
    """Whether arrays and objects nest deeper than `max_depth` (iteratively: no recursion
    limit to hit)."""
    stack = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > max_depth:
            return True
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _lone_surrogate_at(body: Any) -> str | None:
    """The path (`messages[0].content`) of the first string or key holding a lone
    surrogate, or None."""
    stack: list[tuple[Any, str]] = [(body, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if not _is_unicode(value):
                return path or "body"
        elif isinstance(value, dict):
            for key, child in value.items():
                if not _is_unicode(key):
                    return path or "body"
                stack.append((child, f"{path}.{key}" if path else key))
        elif isinstance(value, list):
            stack.extend((child, f"{path}[{index}]") for index, child in enumerate(value))
    return None


def _is_unicode(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def check_chat_body(body: Any) -> ChatRequest:
    """The checks of parse_chat_request on a decoded body (also for bodies BeastMode sends
    on its own, like warm-up prompts). Raises GatewayError (400) naming the field."""
    if not isinstance(body, dict):
        raise GatewayError("invalid_request", "The request body must be a JSON object.")
    if forbidden := sorted(FORBIDDEN_FIELDS.intersection(body)):
        raise GatewayError(
            "forbidden_field",
            f"The field '{forbidden[0]}' is not accepted: BeastMode decides where requests "
            "go. Send only the model name; admins configure endpoints and keys.",
            param=forbidden[0],
        )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise GatewayError("invalid_request", "'model' is required (a string).", param="model")
    _check_messages(body.get("messages"))
    check_parameters(body)
    stream = body.get("stream") or False
    stream_options = body.get("stream_options")
    cache_field = body.pop("cache", None)
    return ChatRequest(
        model=model,
        stream=stream,
        include_usage=bool(stream_options and stream_options.get("include_usage")),
        body=body,
        cache_field=cache_field,
    )


def _check_messages(messages: object) -> None:
    if not isinstance(messages, list) or not messages:
        raise GatewayError(
            "invalid_request", "'messages' must be a non-empty array.", param="messages"
        )
    for index, message in enumerate(messages):
        param = f"messages[{index}]"
        if not isinstance(message, dict):
            raise GatewayError("invalid_request", f"'{param}' must be an object.", param=param)
        role = message.get("role")
        if not isinstance(role, str):
            raise GatewayError(
                "invalid_request",
                f"Invalid type for '{param}.role': expected one of {_listing(ROLES)}, but got "
                f"{json_type(role)} instead.",
                param=f"{param}.role",
            )
        if role not in ROLES:
            raise GatewayError(
                "invalid_request",
                f"Invalid value for '{param}.role': '{role[:40]}'. Supported values are: "
                f"{_listing(ROLES)}.",
                param=f"{param}.role",
            )
        if (name := message.get("name")) is not None and not isinstance(name, str):
            raise invalid_type(f"{param}.name", "a string", name)
        content = message.get("content")
        if content is None and not _may_omit_content(message):
            raise GatewayError(
                "invalid_request", f"'{param}.content' is required.", param=f"{param}.content"
            )
        if content is not None and not isinstance(content, (str, list)):
            raise GatewayError(
                "invalid_request",
                f"'{param}.content' must be a string or an array of content parts.",
                param=f"{param}.content",
            )
        if isinstance(content, list) and role not in PART_TYPES_BY_ROLE:
            raise GatewayError(
                "invalid_request",
                f"'{param}.content' must be a string in a '{role}' message.",
                param=f"{param}.content",
            )
        if isinstance(content, list):
            _check_content_parts(content, f"{param}.content", role)


def _may_omit_content(message: dict[str, Any]) -> bool:
    """An assistant turn that called tools (or a function) may come without content."""
    return message["role"] == "assistant" and bool(
        message.get("tool_calls") or message.get("function_call")
    )


# The content part types each role accepts, as in OpenAI's Chat Completions API (the
# legacy `function` role takes a string only).
PART_TYPES_BY_ROLE: dict[str, tuple[str, ...]] = {
    "system": ("text",),
    "developer": ("text",),
    "user": ("text", "image_url", "input_audio", "file"),
    "assistant": ("text", "refusal"),
    "tool": ("text",),
}
# What a content part of each type must carry, as OpenAI checks it: the field named for
# the type, of this JSON type.
_PART_FIELDS: dict[str, type] = {
    "text": str,
    "refusal": str,
    "image_url": dict,
    "input_audio": dict,
    "file": dict,
}
# ... and inside that object, these strings.
_PART_SUBFIELDS = {"image_url": ("url",), "input_audio": ("data", "format")}


def _check_content_parts(parts: list[Any], param: str, role: str) -> None:
    # Refused, not skipped: a part without its text embeds as an empty prompt, which the
    # semantic cache would answer with any other empty prompt's cached answer.
    if not parts:
        raise GatewayError(
            "invalid_request",
            f"'{param}' must be a string or a non-empty array of content parts.",
            param=param,
        )
    for index, part in enumerate(parts):
        where = f"{param}[{index}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise GatewayError(
                "invalid_request",
                f"'{where}' must be an object with a 'type', like "
                '{"type": "text", "text": "..."}.',
                param=where,
            )
        kind = part["type"]
        allowed = PART_TYPES_BY_ROLE[role]
        if kind not in allowed:
            raise GatewayError(
                "invalid_request",
                f"Invalid value: '{kind}'. Supported values in a '{role}' message are: "
                f"{_listing(allowed)}.",
                param=f"{where}.type",
            )
        wanted = _PART_FIELDS[kind]
        if not isinstance(part.get(kind), wanted):
            raise GatewayError(
                "invalid_request",
                f"'{where}.{kind}' is required in a '{kind}' part "
                f"({'a string' if wanted is str else 'an object'}).",
                param=where,
            )
        for name in _PART_SUBFIELDS.get(kind, ()):
            if not isinstance(part[kind].get(name), str):
                raise GatewayError(
                    "invalid_request",
                    f"'{where}.{kind}.{name}' is required (a string).",
                    param=where,
                )


def _listing(values: tuple[str, ...]) -> str:
    """As OpenAI lists values: 'a'; 'a' and 'b'; 'a', 'b', and 'c'."""
    quoted = [f"'{value}'" for value in values]
    if len(quoted) <= 2:
        return " and ".join(quoted)
    return ", ".join(quoted[:-1]) + ", and " + quoted[-1]
