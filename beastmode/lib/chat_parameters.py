"""The optional parameters of a chat completion body, checked as OpenAI checks them (its
API reference's bounds, and its error messages' shape: "Invalid 'n': integer above
maximum value. Expected a value <= 128, but got 1000 instead."), so that nothing out of
range is forwarded upstream. Called by beastmode/lib/chat_request.py, the one parser."""

import math
from typing import Any

from beastmode.lib.errors import GatewayError

# OpenAI sets no upper bound on max_tokens beyond the model's own. 2**20 (1,048,576) is
# above every model's output limit today (the largest are 128k tokens) and far below
# the 32-bit integers many OpenAI-compatible servers (vLLM, llama.cpp) parse it into,
# where 10**30 made them fail or wrap around.
MAX_OUTPUT_TOKENS = 2**20
_INT64 = 2**63

# name: (low, high) for numbers (decimals allowed)
_DECIMALS: dict[str, tuple[float, float]] = {
    "temperature": (0, 2),
    "top_p": (0, 1),
    "presence_penalty": (-2, 2),
    "frequency_penalty": (-2, 2),
}
# name: (low, high) for integers
_INTEGERS: dict[str, tuple[int, int]] = {
    "n": (1, 128),
    "max_tokens": (1, MAX_OUTPUT_TOKENS),
    "max_completion_tokens": (1, MAX_OUTPUT_TOKENS),
    "top_logprobs": (0, 20),
    "seed": (-_INT64, _INT64 - 1),
}
_BOOLEANS = ("stream", "logprobs", "parallel_tool_calls", "store")
_STRINGS = ("user", "service_tier", "reasoning_effort", "safety_identifier", "prompt_cache_key")
_OBJECTS = ("stream_options", "response_format", "prediction", "audio", "web_search_options")
_MAX_STOP_SEQUENCES = 4
_MAX_TOOLS = 128
_MAX_METADATA_PAIRS, _MAX_METADATA_KEY_CHARS, _MAX_METADATA_VALUE_CHARS = 16, 64, 512


def check_parameters(body: dict[str, Any]) -> None:
    """GatewayError (400 invalid_request, `param` naming the field) for the first optional
    parameter of the wrong type or out of range."""
    for name, (low, high) in _DECIMALS.items():
        if (value := body.get(name)) is not None:
            _check_number(name, value, low, high, integer=False)
    for name, (int_low, int_high) in _INTEGERS.items():
        if (value := body.get(name)) is not None:
            _check_number(name, value, int_low, int_high, integer=True)
    for name in _BOOLEANS:
        if (value := body.get(name)) is not None and not isinstance(value, bool):
            raise invalid_type(name, "a boolean", value)
    for name in _STRINGS:
        if (value := body.get(name)) is not None and not isinstance(value, str):
            raise invalid_type(name, "a string", value)
    for name in _OBJECTS:
        if (value := body.get(name)) is not None and not isinstance(value, dict):
            raise invalid_type(name, "an object", value)
    _check_stream_options(body.get("stream_options"))
    _check_stop(body.get("stop"))
    _check_logit_bias(body.get("logit_bias"))
    _check_tools(body.get("tools"))
    _check_tool_choice(body.get("tool_choice"))
    _check_metadata(body.get("metadata"))
    if (modalities := body.get("modalities")) is not None and not (
        isinstance(modalities, list) and all(isinstance(m, str) for m in modalities)
    ):
        raise invalid_type("modalities", "an array of strings", modalities)


def invalid_type(param: str, expected: str, value: object) -> GatewayError:
    return GatewayError(
        "invalid_request",
        f"Invalid type for '{param}': expected {expected}, but got {json_type(value)} instead.",
        param=param,
    )


def json_type(value: object) -> str:
    """The JSON type of a decoded value, with its article, as OpenAI names it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _check_number(name: str, value: object, low: float, high: float, *, integer: bool) -> None:
    kind = "integer" if integer else "decimal"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid_type(name, "an integer" if integer else "a number", value)
    if integer and isinstance(value, float):
        raise invalid_type(name, "an integer", value)
    # Floats only: math.isfinite(10**400) overflows. NaN and Infinity reach here only in
    # bodies not parsed by parse_chat_request (warm-up prompts, stored jobs).
    if isinstance(value, float) and not math.isfinite(value):
        raise GatewayError(
            "invalid_request",
            f"Invalid '{name}': expected a finite number, but got {value} instead.",
            param=name,
        )
    if value < low or value > high:
        above = value > high
        side, bound = ("above maximum", f"<= {high}") if above else ("below minimum", f">= {low}")
        raise GatewayError(
            "invalid_request",
            f"Invalid '{name}': {kind} {side} value. Expected a value {bound}, but got "
            f"{_short(value)} instead.",
            param=name,
        )


def _short(value: float) -> str:
    text = str(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} digits)"


def _check_stream_options(options: dict[str, Any] | None) -> None:
    if options is None:
        return
    include_usage = options.get("include_usage")
    if include_usage is not None and not isinstance(include_usage, bool):
        raise invalid_type("stream_options.include_usage", "a boolean", include_usage)


def _too_long(param: str, maximum: int, length: int) -> GatewayError:
    return GatewayError(
        "invalid_request",
        f"Invalid '{param}': array too long. Expected an array with maximum length "
        f"{maximum}, but got an array with length {length} instead.",
        param=param,
    )


def _check_stop(stop: object) -> None:
    if stop is None or isinstance(stop, str):
        return
    if not isinstance(stop, list):
        raise invalid_type("stop", "a string or an array of strings", stop)
    if len(stop) > _MAX_STOP_SEQUENCES:
        raise _too_long("stop", _MAX_STOP_SEQUENCES, len(stop))
    for index, sequence in enumerate(stop):
        if not isinstance(sequence, str):
            raise invalid_type(f"stop[{index}]", "a string", sequence)


def _check_logit_bias(bias: object) -> None:
    if bias is None:
        return
    if not isinstance(bias, dict):
        raise invalid_type("logit_bias", "an object", bias)
    for token, value in bias.items():
        if not token.isascii() or not token.isdigit():
            raise GatewayError(
                "invalid_request",
                f"Invalid key in 'logit_bias': {token[:40]!r}. Keys are token ids "
                "(integers, as strings).",
                param="logit_bias",
            )
        _check_number(f"logit_bias.{token[:40]}", value, -100, 100, integer=False)


def _check_tools(tools: object) -> None:
    if tools is None:
        return
    if not isinstance(tools, list):
        raise invalid_type("tools", "an array of objects", tools)
    if len(tools) > _MAX_TOOLS:
        raise _too_long("tools", _MAX_TOOLS, len(tools))
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise invalid_type(f"tools[{index}]", "an object", tool)
        if not isinstance(tool.get("type"), str):
            raise invalid_type(f"tools[{index}].type", "a string", tool.get("type"))
        function = tool.get("function")
        if function is not None and not (
            isinstance(function, dict) and isinstance(function.get("name"), str)
        ):
            raise GatewayError(
                "invalid_request",
                f"Invalid 'tools[{index}].function': expected an object with a 'name' (a string).",
                param=f"tools[{index}].function",
            )


def _check_tool_choice(choice: object) -> None:
    if choice is not None and not isinstance(choice, str | dict):
        raise invalid_type("tool_choice", "a string or an object", choice)


def _check_metadata(metadata: object) -> None:
    """As OpenAI bounds it: up to 16 pairs of strings, keys up to 64 characters, values
    up to 512 (it may be stored, and is the client's to fill)."""
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise invalid_type("metadata", "an object", metadata)
    if len(metadata) > _MAX_METADATA_PAIRS:
        raise GatewayError(
            "invalid_request",
            f"Invalid 'metadata': too many properties. Expected an object with at most "
            f"{_MAX_METADATA_PAIRS} properties, but got {len(metadata)} instead.",
            param="metadata",
        )
    for key, value in metadata.items():
        if len(key) > _MAX_METADATA_KEY_CHARS:
            raise GatewayError(
                "invalid_request",
                f"Invalid 'metadata': a key is {len(key)} characters long; the maximum is "
                f"{_MAX_METADATA_KEY_CHARS}.",
                param="metadata",
            )
        if not isinstance(value, str):
            raise invalid_type(f"metadata.{key[:64]}", "a string", value)
        if len(value) > _MAX_METADATA_VALUE_CHARS:
            raise GatewayError(
                "invalid_request",
                f"Invalid 'metadata.{key}': string too long. Expected a string with maximum "
                f"length {_MAX_METADATA_VALUE_CHARS}, but got a string with length "
                f"{len(value)} instead.",
                param=f"metadata.{key}",
            )
