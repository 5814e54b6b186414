"""JSON on the hot path: orjson, several times faster than the standard library, which stays
the fallback for what orjson refuses or reads differently."""

import json
import math
import re
from typing import Any

import orjson


def dumps(value: Any, *, sort_keys: bool = False) -> bytes:
    """Compact UTF-8 JSON. A lone surrogate (which only json.loads lets into a string) is
    written as its escape, `\\ud800`, as the standard library writes it."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else None)
    except TypeError:
        text = json.dumps(value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False)
        try:
            return text.encode()
        except UnicodeEncodeError:
            return json.dumps(value, sort_keys=sort_keys, separators=(",", ":")).encode()


def loads(data: bytes, *, finite: bool = False) -> Any:
    """The standard library's json.loads, at orjson's speed where orjson agrees: what it
    refuses (NaN, lone surrogates, invalid JSON) is parsed, or refused with the standard
    library's error message, by json.loads, and so is anything with a run of 20 digits
    (orjson reads integers beyond 64 bits as floats, silently). With `finite`, NaN,
    Infinity and numbers beyond a float's range (1e999) are refused (ValueError), as
    orjson refuses them. RecursionError: nested deeper than json.loads can go (~1,000)."""
    if _LONG_NUMBER.search(data) is None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    if finite:
        return json.loads(data, parse_constant=_refuse_constant, parse_float=_finite_float)
    return json.loads(data)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is beyond a double's range")
    return value


_LONG_NUMBER = re.compile(rb"\d{20}")
