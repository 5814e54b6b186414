"""Client-chosen values as metric labels and dashboard groups: bounded.

A model name is the client's choice (3,000 random ones grew /metrics to 23 MB and the
dashboard's model list to 3,114 rows): a name that is not a configured model counts as
`unknown` (the request's record keeps the name). So every model label is a name an admin
configured, and no client text (NUL, control characters, any length) reaches a label.
"""

from routing import registry

UNKNOWN = "unknown"


def model_label(name: str) -> str:
    """The label of a request's model: its name if it is configured, else `unknown`
    ("" when the request named none)."""
    if not name or name in registry.current().routes:
        return name
    return UNKNOWN
