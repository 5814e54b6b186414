"""Semantic pairs an admin marked false: that asked text is never served that cached text
again, in its partition, until an admin unmarks the pair.

Kept in memory as digests of (partition, asked text, cached text), reloaded with the
registry (every admin change moves its version), so a lookup pays a set lookup per
candidate, and nothing while no pair is marked.
"""

import hashlib

from cache.models import SemanticPair

_marked: frozenset[tuple[str, bytes, bytes]] = frozenset()


def reload() -> None:
    global _marked
    rows = (
        SemanticPair.objects.filter(marked_false=True)
        .exclude(partition="")  # recorded before pairs kept their partition
        .values_list("partition", "asked_text", "cached_text")
        .distinct()
    )
    _marked = frozenset(
        (partition, _digest(asked), _digest(cached)) for partition, asked, cached in rows
    )


def is_marked(partition: str, asked_text: str, cached_text: str) -> bool:
    marked = _marked
    return bool(marked) and (partition, _digest(asked_text), _digest(cached_text)) in marked


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()
