"""This process's cache tiers, and what every cache thread asks of them: is an entry
purged, forget what purges cover, run a database call without letting it fail a request."""

import logging
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings
from django.db import close_old_connections

from cache import purge_log
from cache.semantic import vector_index
from cache.tiers import DatabaseTier, Entry, L3Row, MemoryTier, RedisTier, row_scope

log = logging.getLogger(__name__)
T = TypeVar("T")


class _Tiers:
    def __init__(self) -> None:
        self.l1 = MemoryTier(
            max_entries=settings.CACHE_L1_MAX_ENTRIES,
            max_bytes=settings.CACHE_L1_MAX_BYTES,
            ttl_s=settings.CACHE_L1_TTL_S,
        )
        self.l2 = RedisTier(ttl_s=settings.CACHE_L2_TTL_S)
        self.l3 = DatabaseTier(ttl_s=settings.CACHE_L3_TTL_S)


_tiers: _Tiers | None = None


def tiers() -> _Tiers:
    global _tiers
    if _tiers is None:
        _tiers = _Tiers()
    return _tiers


def is_purged(entry: Entry) -> bool:
    return purge_log.log.covers(
        model=entry.model, namespace=entry.namespace, key=entry.key, created_at=entry.created_at
    )


def is_row_purged(row: L3Row) -> bool:
    model, namespace, key, created_at = row_scope(row)
    return purge_log.log.covers(model=model, namespace=namespace, key=key, created_at=created_at)


def forget(purges: list[purge_log.Purge]) -> None:
    """Drop what these purges cover from this process's L1 and semantic index."""
    for purge in purges:
        tiers().l1.purge(model=purge.model, namespace=purge.namespace, key=purge.key)
        vector_index.index().purge(model=purge.model, namespace=purge.namespace, key=purge.key)


def db(operation: Callable[[], T]) -> T | None:
    """Run a database call from a cache thread; a failure is a miss, never an error."""
    try:
        return operation()
    except Exception:
        log.warning("L3 cache (database) call failed", exc_info=True)
        close_old_connections()
        return None
