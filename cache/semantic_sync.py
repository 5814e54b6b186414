"""Keeps this process's semantic index in step with L3.

At start it loads every unexpired vector from L3 (so a restart keeps semantic hits), then
follows new rows every SEMANTIC_SYNC_S, which brings in what other processes and warming
workers stored, and drops expired vectors now and then. It runs in a daemon thread.
"""

import contextlib
import logging
import threading
import time

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from cache import semantic
from cache.models import CacheEntry
from routing import registry

log = logging.getLogger(__name__)
_BATCH = 5000
_started = threading.Event()


def start() -> None:
    if not _started.is_set():
        _started.set()
        threading.Thread(target=_follow_forever, name="semantic-sync", daemon=True).start()


class KnownKeys:
    """Which exact keys L3 holds, so a miss in L1 and L2 skips the database when L3 cannot
    have the answer either. Until the first full load it answers "maybe" for every key."""

    def __init__(self) -> None:
        self._prefixes: set[int] = set()
        self.loaded = False

    def add(self, key: str) -> None:
        # A key that is not a hex digest (a row put there by hand) can never be looked up;
        # refusing it here stopped the sync at that row for good.
        with contextlib.suppress(ValueError):
            self._prefixes.add(int(key[:15], 16))

    def might_contain(self, key: str) -> bool:
        return not self.loaded or int(key[:15], 16) in self._prefixes


known_keys = KnownKeys()


def load_new(after_id: int) -> int:
    """Add rows with ids above `after_id` to the known keys and, those with a vector, to
    the index; returns the last id seen. Conversations the index holds already (this
    process's own writes read back) only get their expiry; the text and vector are read
    for the others. Rows without a vector cost one (id, key) pair: every answer of a model
    without semantic matching passes here, this process's own included."""
    index = semantic.index()
    while True:
        now = timezone.now()
        rows = list(
            CacheEntry.objects.filter(id__gt=after_id, expires_at__gt=now)
            .order_by("id")
            .values_list("id", "key")[:_BATCH]
        )
        if not rows:
            return after_id
        for _, key in rows:
            known_keys.add(key)
        with_vectors = CacheEntry.objects.filter(
            id__gt=after_id,
            id__lte=rows[-1][0],
            expires_at__gt=now,
            semantic_eligible=True,
            embedding__isnull=False,
        ).values_list("id", "partition", "key", "expires_at")
        unindexed = [
            row_id
            for row_id, partition, key, expires_at in with_vectors
            if not index.touch(partition, key, expires_at.timestamp())
        ]
        if unindexed:
            for partition, key, text, expires_at, embedding in CacheEntry.objects.filter(
                id__in=unindexed
            ).values_list("partition", "key", "prompt_text", "expires_at", "embedding"):
                vector = semantic.from_bytes(embedding)
                index.add(partition, key, text, expires_at.timestamp(), vector)
        after_id = rows[-1][0]
        if len(rows) < _BATCH:
            return after_id


def _follow_forever() -> None:
    last_id = 0
    last_sweep = time.monotonic()
    if any(route.semantic_mode != "off" for route in registry.current().routes.values()):
        from cache.embedder import get_embedder

        get_embedder()  # load the model now, not on the first request that needs it
    while True:
        try:
            close_old_connections()
            last_id = load_new(last_id)
            known_keys.loaded = True
            if time.monotonic() - last_sweep > 60:
                semantic.index().drop_expired()
                last_sweep = time.monotonic()
        except Exception:
            log.warning("semantic index sync failed; retrying", exc_info=True)
        time.sleep(settings.SEMANTIC_SYNC_S)
