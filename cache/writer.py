"""The cache's lower-tier writer: stored answers reach L2, the semantic index and L3 from
one thread, in batches, off the hot path; nothing a purge covers is written."""

from __future__ import annotations

import atexit
import functools
import logging
import queue
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import DataError

from cache import purge_log
from cache.layers import db, forget, is_purged, is_row_purged, tiers
from cache.semantic import vector_index
from cache.semantic.embedder import get_embedder
from cache.tiers import DatabaseTier, Entry, L3Row

if TYPE_CHECKING:
    from cache.service import CachePlan

log = logging.getLogger(__name__)


class _LowerTierWriter:
    """Writes stored answers below L1 on one thread, in batches, off the hot path.

    The event loop only queues an answer: no thread hop per request. The thread wakes,
    lets a few milliseconds of answers gather, then writes them together: L2 in one Redis
    pipeline, the semantic index (one embedder call for the conversations the lookup did
    not embed), and L3 in one upsert every CACHE_L3_WRITE_INTERVAL_S. A clean shutdown
    writes what is left (`flush`, also registered with atexit). Hits on cached answers are
    counted here too and added to L3's hits column with each L3 write, after the rows they
    count: a hit on an answer still on its way to L3 is not lost."""

    GATHER_S = 0.005
    MAX_BATCH = 1000
    MAX_QUEUED = 20_000  # beyond this, answers stay in L1 only until the writer catches up

    def __init__(self) -> None:
        # None wakes the thread: a hit was counted while nothing waited for L3.
        self._queue: queue.SimpleQueue[tuple[Entry, CachePlan] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._for_l3: list[L3Row] = []
        self._hits: Counter[str] = Counter()
        self._hits_lock = threading.Lock()
        self._l3_due = 0.0  # when what waits for L3 is written; 0: nothing waits
        self._warned_at = -60.0

    def put(self, entry: Entry, plan: CachePlan) -> None:
        if self._queue.qsize() >= self.MAX_QUEUED:
            if time.monotonic() - self._warned_at > 60:
                self._warned_at = time.monotonic()
                log.warning("cache writer %d answers behind: new answers stay in L1 only",
                            self.MAX_QUEUED)  # fmt: skip
            return
        self._queue.put((entry, plan))
        self._start()

    def count_hit(self, key: str) -> None:
        """Count a hit on the cached answer `key` (written to L3 with the next rows)."""
        with self._hits_lock:
            first = not self._hits
            self._hits[key] += 1
        if first:
            self._queue.put(None)
            self._start()

    def _start(self) -> None:
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="cache-lower-writer", daemon=True
                    )
                    self._thread.start()
                    atexit.register(self.flush)

    def flush(self, timeout_s: float = 5.0) -> None:
        """Write what is queued now (shutdown). Gives up after `timeout_s` if the thread is
        stuck in a write: cache entries are not worth a process that does not exit."""
        if not self._write_lock.acquire(timeout=timeout_s):
            log.warning("cache writer busy at shutdown; %d answers stay unwritten",
                        self._queue.qsize())  # fmt: skip
            return
        try:
            self._write(self._take_queued([]), l3_now=True)
        finally:
            self._write_lock.release()

    def _run(self) -> None:
        while True:
            wait_s = max(self._l3_due - time.monotonic(), 0.0) if self._l3_due else None
            try:
                first = self._queue.get(timeout=wait_s)
            except queue.Empty:
                first = None
            if first is not None:
                time.sleep(self.GATHER_S)
            with self._write_lock:
                batch = self._take_queued([first] if first is not None else [])
                try:
                    self._write(batch)
                except Exception:  # a lost cache write is a later miss; the thread must live
                    log.exception("cache writer: %d answers not written below L1", len(batch))

    def _take_queued(
        self, batch: list[tuple[Entry, CachePlan] | None]
    ) -> list[tuple[Entry, CachePlan]]:
        while len(batch) < self.MAX_BATCH:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return [item for item in batch if item is not None]

    def _take_hits(self) -> dict[str, int]:
        with self._hits_lock:
            hits, self._hits = dict(self._hits), Counter()
        return hits

    def _write(self, batch: list[tuple[Entry, CachePlan]], *, l3_now: bool = False) -> None:
        """L2 and the index now; L3 once the oldest row waiting for it is due (or now).
        Nothing a purge covers is written: answers purged while they waited are dropped
        here, and their copies in L2 and the index with them."""
        batch = [(entry, plan) for entry, plan in batch if not is_purged(entry)]
        if batch:
            self._for_l3 += write_l2_and_index(batch, time.time())
        if not (self._for_l3 or self._hits):
            return
        if not self._l3_due:
            self._l3_due = time.monotonic() + settings.CACHE_L3_WRITE_INTERVAL_S
        if l3_now or time.monotonic() >= self._l3_due:
            self._l3_due = 0.0
            rows, self._for_l3 = _without_purged(self._for_l3), []
            if rows:
                db(functools.partial(put_rows_holding_purges, rows))
            if hits := self._take_hits():
                db(functools.partial(tiers().l3.count_hits, hits))


_UNSTORABLE = (DataError, OverflowError)  # OverflowError: SQLite's driver, before the query


def put_rows_holding_purges(rows: list[L3Row]) -> None:
    """Write rows to L3, then read the purges committed meanwhile and delete the rows
    they cover. A purge records itself before it deletes L3 rows, so a row committed
    after that delete is seen here: together, no purged answer outlives a purge in L3."""
    _put_rows(rows)
    forget(purge_log.log.refresh())
    covered = [row for row in rows if is_row_purged(row)]
    if covered:
        tiers().l3.delete_covered(covered)
        _drop_copies(covered)


def _without_purged(rows: list[L3Row]) -> list[L3Row]:
    kept, covered = [], []
    for row in rows:
        (covered if is_row_purged(row) else kept).append(row)
    if covered:
        _drop_copies(covered)
    return kept


def _drop_copies(rows: list[L3Row]) -> None:
    """Drop what this process wrote of purged rows besides L3: L2 and the index."""
    doomed = [row[0] for row in rows]
    tiers().l2.delete_many(doomed)
    vector_index.index().remove(doomed)


def _put_rows(rows: list[L3Row]) -> None:
    """Write rows to L3 together; if the database refuses a value it cannot store, one by
    one, so that the bad row costs only its own entry."""
    try:
        tiers().l3.put_rows(rows)
    except _UNSTORABLE:
        if len(rows) == 1:
            raise
        for row in rows:
            try:
                tiers().l3.put_rows([row])
            except _UNSTORABLE as error:  # a lost cache write is a later miss
                log.warning("cache writer: an answer not written to L3 (%s)", type(error).__name__)


def write_l2_and_index(batch: list[tuple[Entry, CachePlan]], now: float) -> list[L3Row]:
    """Write L2 and the semantic index; the rows for L3."""
    tiers().l2.put_many([entry for entry, _ in batch], now)
    unembedded = [plan for _, plan in batch if plan.semantic and plan.vector is None]
    if unembedded:
        vectors = get_embedder().embed_whole([p.key.conversation_text for p in unembedded])
        for plan, vector in zip(unembedded, vectors, strict=True):
            plan.vector, plan.too_long = vector, vector is None
    rows: list[L3Row] = []
    for entry, plan in batch:
        vector = plan.vector if plan.semantic else None
        if vector is not None:
            vector_index.index().add(
                entry.partition, entry.key, entry.expires_at, vector,
                owner=(entry.namespace, entry.model),
            )  # fmt: skip
        embedding = vector_index.to_bytes(vector) if vector is not None else None
        rows.append(DatabaseTier.row(entry, embedding))
    return rows


lower_writer = _LowerTierWriter()
