"""Per-request cache controls: the body field `cache` and the Cache-Control header.

    {"cache": {"no-cache": true, "no-store": true, "ttl": 600}}    (LiteLLM's convention)
    Cache-Control: no-cache | no-store | max-age=N

no-cache: do not answer from the cache (the answer is still stored); no-store: do not
store the answer; ttl: store it for that many seconds (0 is no-store, at most a year);
max-age=N: accept only a cached answer younger than N seconds (max-age=0 is no-cache).
"""

from dataclasses import dataclass
from typing import Any

from beastmode.lib.errors import GatewayError

MAX_TTL_S = 365 * 24 * 3600


@dataclass(frozen=True)
class Controls:
    no_cache: bool = False
    no_store: bool = False
    ttl_s: int | None = None
    max_age_s: int | None = None


def parse(body_field: Any, cache_control: str | None) -> Controls:
    no_cache = no_store = False
    ttl_s = max_age_s = None
    if body_field is not None:
        if not isinstance(body_field, dict):
            raise _invalid('\'cache\' must be an object like {"no-cache": true, "ttl": 600}.')
        unknown = set(body_field) - {"no-cache", "no-store", "ttl"}
        if unknown:
            raise _invalid(f"'cache' has unknown field(s): {', '.join(sorted(unknown))}.")
        no_cache = _flag(body_field, "no-cache")
        no_store = _flag(body_field, "no-store")
        if "ttl" in body_field:
            ttl_s = _seconds(body_field["ttl"], "cache.ttl")
            if ttl_s > MAX_TTL_S:
                raise _invalid(f"'cache.ttl' must be at most {MAX_TTL_S} seconds (a year).")
            no_store = no_store or ttl_s == 0
    for directive in (cache_control or "").lower().split(","):
        name, _, value = directive.strip().partition("=")
        if name == "no-cache":
            no_cache = True
        elif name == "no-store":
            no_store = True
        elif name == "max-age":
            max_age_s = _seconds(value.strip().strip('"'), "Cache-Control max-age")
            no_cache = no_cache or max_age_s == 0
    return Controls(no_cache=no_cache, no_store=no_store, ttl_s=ttl_s, max_age_s=max_age_s)


def _flag(field: dict[str, Any], name: str) -> bool:
    value = field.get(name, False)
    if not isinstance(value, bool):
        raise _invalid(f"'cache.{name}' must be true or false.")
    return value


def whole_seconds(value: Any) -> int | None:
    """``value`` as a whole, non-negative number of seconds (an integer, 600.0, or digits
    as a header carries them); None when it is not one (1.5, -1, true, Infinity, "soon")."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        return None
    return value


def _seconds(value: Any, where: str) -> int:
    seconds = whole_seconds(value)
    if seconds is None:
        raise _invalid(f"'{where}' must be a whole number of seconds.")
    return seconds


def _invalid(message: str) -> GatewayError:
    return GatewayError("invalid_request", message, param="cache")
