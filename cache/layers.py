"""This process's cache tiers, and what every cache thread asks of them: is an entry
purged, forget what purges cover, run a database call without letting it fail a request."""

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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


def db(operation: Callable[[], T], *, wait_s: float | None = None) -> T | None:
    """Run a database call from a cache thread; a failure is a miss, never an error.

    With `wait_s` (a request waits for it) the call runs on a thread of its own and the
    caller waits that long at most. A call that fails or outlasts its wait opens a breaker:
    the database is skipped (a miss, nothing written) for a while, as L2 skips Redis."""
    if not _breaker.allows():
        return None
    if wait_s is None:
        return _guarded(operation)
    future = _database_threads.submit(_guarded, operation)
    try:
        return future.result(timeout=wait_s)
    except TimeoutError:
        _breaker.failed(f"no answer within {wait_s:g} s")
        return None


class _Breaker:
    """After FAILURES failed or slow calls in a row, the database is skipped for
    COOLDOWN_S; then calls try it again."""

    FAILURES, COOLDOWN_S = 2, 5.0

    def __init__(self) -> None:
        self._failures = 0
        self._open_until = 0.0

    def allows(self) -> bool:
        return time.monotonic() >= self._open_until

    def succeeded(self) -> None:
        self._failures = 0

    def failed(self, why: str) -> None:
        self._failures += 1
        if self._failures >= self.FAILURES and self.allows():
            self._open_until = time.monotonic() + self.COOLDOWN_S
            log.warning(
                "L3 cache (database) unavailable, skipped for %ss: %s", self.COOLDOWN_S, why
            )


_breaker = _Breaker()
_database_threads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="cache-db")


def _guarded(operation: Callable[[], T]) -> T | None:
    try:
        result = operation()
    except Exception as exc:
        log.debug("L3 cache (database) call failed", exc_info=True)
        _breaker.failed(f"{type(exc).__name__}: {exc}")
        close_old_connections()
        return None
    _breaker.succeeded()
    return result
