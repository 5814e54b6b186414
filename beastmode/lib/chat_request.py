"""Validate a chat completion body before anything is spent on it."""

from dataclasses import dataclass
from typing import Any

from beastmode.lib import fastjson
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
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_RANGES: dict[str, tuple[float, float]] = {
    "temperature": (0, 2),
    "top_p": (0, 1),
    "presence_penalty": (-2, 2),
    "frequency_penalty": (-2, 2),
}
_POSITIVE_INTS = ("n", "max_tokens", "max_completion_tokens")


@dataclass(frozen=True)
class ChatRequest:
    model: str
    stream: bool
    include_usage: bool
    body: dict[str, Any]  # what goes upstream (the model name is replaced per endpoint)
    cache_field: Any = None  # BeastMode's own `cache` controls, never sent upstream


def parse_chat_request(raw: bytes) -> ChatRequest:
    try:
        body = fastjson.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise GatewayError("invalid_json", f"The request body is not valid JSON: {exc}.") from None
    return check_chat_body(body)


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
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise GatewayError("invalid_request", "'stream' must be true or false.", param="stream")
    stream_options = body.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise GatewayError(
            "invalid_request", "'stream_options' must be an object.", param="stream_options"
        )
    _check_numbers(body)
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
        if role not in ROLES:
            raise GatewayError(
                "invalid_request",
                f"'{param}.role' must be one of {', '.join(sorted(ROLES))}; got {role!r}.",
                param=f"{param}.role",
            )
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


def _check_numbers(body: dict[str, Any]) -> None:
    for name, (low, high) in _RANGES.items():
        value = body.get(name)
        if value is None:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not (low <= value <= high)
        ):
            raise GatewayError(
                "invalid_request",
                f"'{name}' must be a number from {low} to {high}; got {value!r}.",
                param=name,
            )
    for name in _POSITIVE_INTS:
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GatewayError(
                "invalid_request",
                f"'{name}' must be a positive integer; got {value!r}.",
                param=name,
            )
