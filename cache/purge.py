"""Purging cached answers from every tier of every process.

A purge is recorded first (a `CachePurge` row), then deletes what L3 and L2 hold. The
record is what makes it hold for answers still on their way to L3 and for copies in any
process: every process reads it (on its next registry reload, and its cache writer right
after each L3 write) and from then on never serves, indexes or writes an entry it covers
(cache/purge_log.py).
"""

from collections.abc import Iterable

from django.db.models import QuerySet

from beastmode.lib import changes
from cache import layers, purge_log
from cache.models import CacheEntry, CachePurge

_KEYS_PER_DELETE = 1000


def purge(*, model: str = "", namespace: str = "", key: str = "") -> int:
    """Purge the entries of a model, a namespace or one key (or where they meet) from
    every tier; this process at once, the others within a registry refresh. Returns how
    many L3 rows were deleted."""
    if not (model or namespace or key):
        raise ValueError("say what to purge: a model, a namespace or a key")
    CachePurge.objects.create(model=model, namespace=namespace, key=key)
    rows = CacheEntry.objects.all()
    if model:
        rows = rows.filter(model=model)
    if namespace:
        rows = rows.filter(namespace=namespace)
    if key:
        rows = rows.filter(key=key)
    return _delete_and_announce([rows])


def purge_keys(keys: Iterable[str]) -> int:
    """Purge these entries (one purge per key, recorded together)."""
    keys = sorted(set(keys))
    if not keys:
        return 0
    CachePurge.objects.bulk_create([CachePurge(key=key) for key in keys])
    chunks = [keys[at : at + _KEYS_PER_DELETE] for at in range(0, len(keys), _KEYS_PER_DELETE)]
    return _delete_and_announce([CacheEntry.objects.filter(key__in=chunk) for chunk in chunks])


def _delete_and_announce(querysets: list[QuerySet[CacheEntry]]) -> int:
    # After the record: a writer that commits a covered row once the delete has run reads
    # the record right after its write, and deletes the row itself.
    deleted = 0
    for rows in querysets:
        doomed = list(rows.values_list("key", flat=True))
        deleted += rows.delete()[0]
        layers.tiers().l2.delete_many(doomed)
    changes.announce()
    apply_new_purges()
    return deleted


def apply_new_purges() -> None:
    """Apply purges this process has not seen yet (called on every registry reload)."""
    layers.forget(purge_log.log.refresh())
