"""Token counts as upstreams report them and as records and cache entries hold them."""

from typing import Any

MAX_TOKEN_COUNT = 2**31 - 1  # the records' token columns are 32-bit


def token_count(value: Any) -> int:
    """An upstream's token count as the record can hold it: garbage counts as 0 and an
    absurd count is capped, so one bad answer cannot make its record unwritable (and
    hold back every record queued with it)."""
    try:
        count = int(value or 0)
    except (TypeError, ValueError, OverflowError):
        return 0
    return min(max(count, 0), MAX_TOKEN_COUNT)
