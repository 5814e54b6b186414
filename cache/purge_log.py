"""The purges this process knows of, and whether one of them covers an entry.

A purge (a `CachePurge` row) covers the entries that match its model, namespace and key
(an empty field matches all) and were created at or before it: answers stored after it
are new answers. Checking an entry's creation time, not only deleting what L3 holds at
the purge, is what makes a purge hold for the answers that were on their way to L3 (in
a writer's queue, in L2 only) in any process, and for copies written back afterwards.

The log is filled from the table on every registry reload and by the cache writer right
after each L3 write; a lookup reads memory only (at most seven dict lookups).

A purge can cover a live entry for `retention_s()` after it, and no longer: then its row
is pruned (cache/retention.py). Every process reads only the rows of that period, and row
ids are never reused (a Postgres sequence, SQLite AUTOINCREMENT), so pruning older rows
changes nothing any process reads.
"""

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings

from cache import controls
from cache.models import CachePurge

# Purges commit in any order (two admins, two processes): each read goes this far back
# from the newest purge seen, and skips the ids it has applied already.
_OVERLAP_S = 60.0
# The purging, storing and pruning hosts' clocks (kept in step by NTP) may disagree a bit.
CLOCK_MARGIN_S = 3600


def retention_s() -> int:
    """How long after a purge an entry it covers can still be alive in some tier.

    An entry lives until its `expires_at`, fixed when it is stored (created_at + its
    lifetime), in every tier: L1 and L2 keep a copy for the shorter of their TTL and the
    entry's remaining life, L3 and the semantic index ignore it past it, and the writer's
    queue carries it unchanged, however long it waits. An entry created before a purge is
    therefore gone everywhere once the longest lifetime an entry can be given has passed
    since: a request's `cache.ttl` and a model's `cache_ttl_s` go up to a year, the
    default is CACHE_L3_TTL_S."""
    return max(controls.MAX_TTL_S, settings.CACHE_L3_TTL_S) + CLOCK_MARGIN_S


@dataclass(frozen=True)
class Purge:
    model: str
    namespace: str
    key: str
    at: float  # epoch seconds: entries created at or before it are purged


class PurgeLog:
    """Thread-safe. Remembers each purge for as long as an entry it covers can live
    (`retention_s`)."""

    def __init__(self, retention_s: float) -> None:
        self.retention_s = retention_s
        self._latest: dict[tuple[str, str, str], float] = {}  # (model, namespace, key) → at
        self._applied: dict[int, float] = {}  # purge id → its time
        self._newest = 0.0
        self._lock = threading.Lock()

    def has_purges(self) -> bool:
        """Whether any purge is held (else `covers` is False for everything)."""
        return bool(self._latest)

    def covers(self, *, model: str, namespace: str, key: str, created_at: float) -> bool:
        latest = self._latest
        if not latest:
            return False
        for m in (model, ""):
            for n in (namespace, ""):
                for k in (key, ""):
                    at = latest.get((m, n, k))
                    if at is not None and created_at <= at:
                        return True
        return False

    def add(self, purge_id: int, purge: Purge) -> bool:
        """Record a purge; False when it was known already."""
        with self._lock:
            if purge_id in self._applied:
                return False
            self._applied[purge_id] = purge.at
            self._newest = max(self._newest, purge.at)
            scope = (purge.model, purge.namespace, purge.key)
            self._latest[scope] = max(self._latest.get(scope, 0.0), purge.at)
            return True

    def refresh(self) -> list[Purge]:
        """Read the purges committed since the last read; returns those new to this log."""
        oldest = time.time() - self.retention_s
        since = max(self._newest - _OVERLAP_S, oldest)
        rows = CachePurge.objects.filter(
            created_at__gte=datetime.fromtimestamp(since, tz=UTC)
        ).values_list("id", "model", "namespace", "key", "created_at")
        new = [
            purge
            for purge_id, model, namespace, key, created_at in rows
            if self.add(purge_id, purge := Purge(model, namespace, key, created_at.timestamp()))
        ]
        self._forget_before(oldest)
        return new

    def _forget_before(self, oldest: float) -> None:
        with self._lock:
            self._applied = {i: at for i, at in self._applied.items() if at >= oldest}
            self._latest = {s: at for s, at in self._latest.items() if at >= oldest}


log = PurgeLog(retention_s=retention_s())
