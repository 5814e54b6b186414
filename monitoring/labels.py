"""Client-chosen values as metric labels and dashboard groups: bounded and clean.

A model name is the client's choice (3,000 random ones grew /metrics to 23 MB and the
dashboard's model list to 3,114 rows): a name that is not a configured model counts as
`unknown` (the request's record keeps the name). Every value loses its control characters
(NUL included) and is cut to MAX_CHARS.
"""

import re

from routing import registry

UNKNOWN = "unknown"
MAX_CHARS = 100
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def model_label(name: str) -> str:
    """The label of a request's model: its name if it is configured, else `unknown`
    ("" when the request named none)."""
    if not name:
        return ""
    return clean(name) if name in registry.current().routes else UNKNOWN


def clean(value: str) -> str:
    return _UNPRINTABLE.sub("", value)[:MAX_CHARS]
