"""One typed value of an `import_models` file, or an error naming where it is and what
is expected there.

`where` names the value as the file does: `models[0] (demo).endpoints[1] (local-b).timeout_s`.
Numbers must be YAML numbers: a quoted "30", like `true` where a number belongs, is
refused rather than guessed at (as the cache fields do).
"""

import math
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_slug

from routing.upstreams import is_http_url


class ImportError_(ValueError):
    """The file is not a valid model configuration (message says where)."""


def text(value: Any, where: str, *, max_length: int, what: str) -> str:
    """A non-empty string; `what` says what it is for (shown in the error)."""
    if not isinstance(value, str) or not value.strip() or len(value) > max_length:
        raise ImportError_(
            f"{where}: {what}, a string of 1 to {max_length} characters"
            f"{_text_hint(value)}; got {value!r}"
        )
    return value


def optional_text(value: Any, where: str, *, max_length: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > max_length:
        raise ImportError_(f"{where}: a string of at most {max_length} characters; got {value!r}")
    return value


def slug(value: Any, where: str, *, max_length: int) -> str:
    name = text(value, where, max_length=max_length, what="a name")
    try:
        validate_slug(name)
    except ValidationError:
        raise ImportError_(
            f"{where}: letters, digits, '-' and '_' only (a slug, as admin asks); got {name!r}"
        ) from None
    return name


def url(value: Any, where: str, *, max_length: int) -> str:
    if not is_http_url(value) or len(value) > max_length:
        raise ImportError_(
            f"{where}: an http:// or https:// URL of at most {max_length} characters, "
            f"like https://api.openai.com/v1; got {value!r}"
        )
    return value


def seconds(value: Any, where: str) -> float:
    """A duration: a number of seconds greater than 0."""
    if not _is_number(value) or not 0 < value < math.inf:
        raise ImportError_(
            f"{where}: a number of seconds greater than 0, like 30 or 2.5"
            f"{_number_hint(value)}; got {value!r}"
        )
    return float(value)


def whole_number(value: Any, where: str, *, high: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not _is_number(value) or not isinstance(value, int) or not 0 <= value <= high:
        raise ImportError_(
            f"{where}: a whole number from 0 to {high}{_number_hint(value)}; got {value!r}"
        )
    return value


def usd(value: Any, where: str, *, max_digits: int, decimal_places: int) -> Decimal:
    """A price in US dollars that the database column holds exactly."""
    limit = 10 ** (max_digits - decimal_places)
    amount = Decimal(str(value)) if _is_number(value) else None
    if (
        amount is None
        or not amount.is_finite()
        or not 0 <= amount < limit
        or amount.quantize(Decimal(10) ** -decimal_places) != amount
    ):
        raise ImportError_(
            f"{where}: a price in USD from 0 to under {limit:,}, with at most {decimal_places} "
            f"decimal places, like 0.15{_number_hint(value)}; got {value!r}"
        )
    return amount


def _is_number(value: Any) -> bool:
    # YAML reads yes/true as a boolean, and True == 1.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number_hint(value: Any) -> str:
    if isinstance(value, bool):
        return " (true and false are not numbers)"
    if isinstance(value, str) and _parses_as_number(value):
        return " (write it without quotes)"
    return ""


def _text_hint(value: Any) -> str:
    if isinstance(value, (bool, int, float)):
        return " (put it in quotes: YAML reads this as a number or true/false)"
    return ""


def _parses_as_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True
