"""The cache as the API sees it: plan a request's caching, look it up, store answers.

Lookup goes L1 → L2 → L3 and promotes a lower-tier hit upward; an L1 hit touches
neither the database nor a thread. Stores write L1 at once and the lower tiers from one
writer thread, in batches. Identical concurrent misses are coalesced: one leader calls
upstream, the others wait for its answer.
"""

import asyncio
import atexit
import functools
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from django.conf import settings
from django.db import DataError, close_old_connections

from cache import (
    controls,
    english,
    false_pairs,
    keys,
    purge_log,
    semantic,
    semantic_sync,
    similarity,
)
from cache.embedder import get_embedder
from cache.models import SemanticPair
from cache.tiers import DatabaseTier, Entry, L3Row, MemoryTier, RedisTier, row_scope
from routing.exchange import token_count
from routing.registry import KeyConfig, RouteConfig
from routing.validation import ChatRequest

log = logging.getLogger(__name__)
T = TypeVar("T")

# Answers worth storing: complete, not cut short by max_tokens or a filter.
STORABLE_FINISH_REASONS = frozenset({"stop", "tool_calls", "function_call"})


@dataclass
class CachePlan:
    key: keys.CacheKey
    request: dict[str, Any]  # the upstream body, kept so warming can refresh the answer
    request_id: str
    read: bool
    store: bool
    ttl_s: int
    max_age_s: int | None
    semantic_mode: str  # "off", "shadow" or "on"
    threshold: float
    vector: np.ndarray | None = None  # the conversation's embedding, once computed
    too_long: bool = False  # longer than the embedder reads: exact matching only
    shadow: "Hit | None" = None  # shadow mode: the semantic hit that was not served

    @property
    def semantic(self) -> bool:
        return (
            self.semantic_mode != "off"
            and self.key.semantic_eligible
            and not self.too_long
            and self._in_english
        )

    @functools.cached_property
    def _in_english(self) -> bool:
        # The embedder reads English only: other languages are matched exactly (english.py).
        return english.is_english(self.key.conversation_text)


@dataclass(frozen=True)
class Hit:
    entry: Entry
    kind: str  # "exact" or "semantic"
    tier: str  # "L1", "L2" or "L3"
    similarity: float | None = None


class _Tiers:
    def __init__(self) -> None:
        self.l1 = MemoryTier(
            max_entries=settings.CACHE_L1_MAX_ENTRIES,
            max_bytes=settings.CACHE_L1_MAX_BYTES,
            ttl_s=settings.CACHE_L1_TTL_S,
        )
        self.l2 = RedisTier(ttl_s=settings.CACHE_L2_TTL_S)
        self.l3 = DatabaseTier(ttl_s=settings.CACHE_L3_TTL_S)


class _LowerTierWriter:
    """Writes stored answers below L1 on one thread, in batches, off the hot path.

    The event loop only queues an answer: no thread hop per request. The thread wakes,
    lets a few milliseconds of answers gather, then writes them together: L2 in one Redis
    pipeline, the semantic index (one embedder call for the conversations the lookup did
    not embed), and L3 in one upsert every CACHE_L3_WRITE_INTERVAL_S. A clean shutdown
    writes what is left (`flush`, also registered with atexit)."""

    GATHER_S = 0.005
    MAX_BATCH = 1000
    MAX_QUEUED = 20_000  # beyond this, answers stay in L1 only until the writer catches up

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Entry, CachePlan]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._for_l3: list[L3Row] = []
        self._l3_due = 0.0
        self._warned_at = -60.0

    def put(self, entry: Entry, plan: CachePlan) -> None:
        if self._queue.qsize() >= self.MAX_QUEUED:
            if time.monotonic() - self._warned_at > 60:
                self._warned_at = time.monotonic()
                log.warning("cache writer %d answers behind: new answers stay in L1 only",
                            self.MAX_QUEUED)  # fmt: skip
            return
        self._queue.put((entry, plan))
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
            wait_s = max(self._l3_due - time.monotonic(), 0.0) if self._for_l3 else None
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

    def _take_queued(self, batch: list[tuple[Entry, CachePlan]]) -> list[tuple[Entry, CachePlan]]:
        while len(batch) < self.MAX_BATCH:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _write(self, batch: list[tuple[Entry, CachePlan]], *, l3_now: bool = False) -> None:
        """L2 and the index now; L3 once the oldest row waiting for it is due (or now).
        Nothing a purge covers is written: answers purged while they waited are dropped
        here, and their copies in L2 and the index with them."""
        batch = [(entry, plan) for entry, plan in batch if not _is_purged(entry)]
        if batch:
            if not self._for_l3:
                self._l3_due = time.monotonic() + settings.CACHE_L3_WRITE_INTERVAL_S
            self._for_l3 += _write_l2_and_index(batch, time.time())
        if self._for_l3 and (l3_now or time.monotonic() >= self._l3_due):
            rows, self._for_l3 = _without_purged(self._for_l3), []
            _db(functools.partial(_put_rows_holding_purges, rows))


_UNSTORABLE = (DataError, OverflowError)  # OverflowError: SQLite's driver, before the query


def _put_rows_holding_purges(rows: list[L3Row]) -> None:
    """Write rows to L3, then read the purges committed meanwhile and delete the rows
    they cover. A purge records itself before it deletes L3 rows, so a row committed
    after that delete is seen here: together, no purged answer outlives a purge in L3."""
    _put_rows(rows)
    forget(purge_log.log.refresh())
    covered = [row for row in rows if _is_row_purged(row)]
    if covered:
        tiers().l3.delete_covered(covered)
        _drop_copies(covered)


def _without_purged(rows: list[L3Row]) -> list[L3Row]:
    kept, covered = [], []
    for row in rows:
        (covered if _is_row_purged(row) else kept).append(row)
    if covered:
        _drop_copies(covered)
    return kept


def _drop_copies(rows: list[L3Row]) -> None:
    """Drop what this process wrote of purged rows besides L3: L2 and the index."""
    doomed = [row[0] for row in rows]
    tiers().l2.delete_many(doomed)
    semantic.index().remove(doomed)


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


lower_writer = _LowerTierWriter()
_tiers: _Tiers | None = None
_io = ThreadPoolExecutor(max_workers=4, thread_name_prefix="cache-io")
_flights: dict[str, asyncio.Future[Entry | None]] = {}
_hit_counts: Counter[str] = Counter()
_last_hit_flush = [time.monotonic()]


def tiers() -> _Tiers:
    global _tiers
    if _tiers is None:
        _tiers = _Tiers()
    return _tiers


def plan(
    key: KeyConfig,
    route: RouteConfig,
    chat: ChatRequest,
    cache_control: str | None,
    request_id: str = "",
) -> CachePlan | None:
    """How this request uses the cache; None when the model's cache is off."""
    wanted = controls.parse(chat.cache_field, cache_control)
    if not route.cache_enabled:
        return None
    return CachePlan(
        key=keys.derive(key.cache_namespace, chat.model, chat.body),
        request=chat.body,
        request_id=request_id,
        read=not wanted.no_cache,
        store=not wanted.no_store,
        ttl_s=wanted.ttl_s or route.cache_ttl_s or settings.CACHE_L3_TTL_S,  # ttl 0 is no-store
        max_age_s=wanted.max_age_s,
        semantic_mode=route.semantic_mode,
        threshold=route.semantic_threshold,
    )


async def lookup(plan: CachePlan) -> Hit | None:
    now = time.time()
    entry = tiers().l1.get(plan.key.exact, now)
    lower_tiers_may_have_it = tiers().l2.available or semantic_sync.known_keys.might_contain(
        plan.key.exact
    )
    if entry is not None and _fresh(entry, plan, now):
        hit: Hit | None = Hit(entry, "exact", "L1")
    elif lower_tiers_may_have_it:
        # One thread hop covers both lower tiers.
        hit = await _in_thread(_lower_tier_hit, plan, now)
    else:
        hit = None
    if hit is None and plan.semantic:
        hit = await _in_thread(_semantic_hit, plan, now)
        if hit is not None and plan.semantic_mode == "shadow":
            plan.shadow, hit = hit, None
    if hit is not None:
        _count_hit(hit.entry.key)
    return hit


def _lower_tier_hit(plan: CachePlan, now: float) -> Hit | None:
    found = _fetch(plan.key.exact, plan, now)
    return Hit(found[0], "exact", found[1]) if found else None


def _fetch(key: str, plan: CachePlan, now: float) -> tuple[Entry, str] | None:
    """An entry from L1, else L2, else L3 (promoted upward), with the tier it came from."""
    layers = tiers()
    if (entry := layers.l1.get(key, now)) is not None and _fresh(entry, plan, now):
        return entry, "L1"
    entry = layers.l2.get(key) if layers.l2.available else None
    tier = "L2"
    if entry is not None and _is_purged(entry):
        layers.l2.delete(key)  # a copy written before the purge reached its writer
        entry = None
    if entry is None or not _fresh(entry, plan, now):
        if not semantic_sync.known_keys.might_contain(key):
            return None  # L3 cannot have it: no database round trip on a plain miss
        entry = _db(lambda: layers.l3.get(key, now))
        tier = "L3"
        if entry is None or not _fresh(entry, plan, now) or _is_purged(entry):
            return None
        layers.l2.put(entry, now)
    _put_l1(entry, now)
    return entry, tier


def _put_l1(entry: Entry, now: float) -> None:
    """Put an entry in L1 unless a purge covers it. Checked again after the put: a purge
    applied in between (logged, then L1 purged) would otherwise miss this entry, and L1
    hits are never checked (they must not cost more than a dict lookup)."""
    layers = tiers()
    layers.l1.put(entry, now)
    if _is_purged(entry):
        layers.l1.delete(entry.key)


def _is_purged(entry: Entry) -> bool:
    return purge_log.log.covers(
        model=entry.model, namespace=entry.namespace, key=entry.key, created_at=entry.created_at
    )


def _is_row_purged(row: L3Row) -> bool:
    model, namespace, key, created_at = row_scope(row)
    return purge_log.log.covers(model=model, namespace=namespace, key=key, created_at=created_at)


def forget(purges: list[purge_log.Purge]) -> None:
    """Drop what these purges cover from this process's L1 and semantic index."""
    for purge in purges:
        tiers().l1.purge(model=purge.model, namespace=purge.namespace, key=purge.key)
        semantic.index().purge(model=purge.model, namespace=purge.namespace, key=purge.key)


def _semantic_hit(plan: CachePlan, now: float) -> Hit | None:
    """The best cached conversation of the same partition that is similar enough and that
    no guard refuses; also logs the pair (served or shadow) for evaluation."""
    asked = plan.key.conversation_text
    plan.vector = get_embedder().embed_whole([asked])[0]
    if plan.vector is None:
        plan.too_long = True
        return None
    candidates = [
        candidate
        for candidate in semantic.index().search(
            plan.key.partition,
            plan.vector,
            k=similarity.TOP_K,
            floor=similarity.min_cosine(plan.threshold),
        )
        if not false_pairs.is_marked(plan.key.partition, asked, candidate.text)
    ]
    while candidates:
        chosen = similarity.choose(
            asked, [(c.text, c.cosine) for c in candidates], threshold=plan.threshold
        )
        if chosen is None:
            return None
        candidate = candidates.pop(chosen)
        if (found := _fetch(candidate.key, plan, now)) is None:
            continue  # purged or expired since it was indexed: try the next best
        score = round(similarity.score(candidate.cosine), 4)
        hit = Hit(found[0], "semantic", found[1], score)
        _io.submit(_log_pair, plan, hit, candidate.text)
        return hit
    return None


def _log_pair(plan: CachePlan, hit: Hit, cached_text: str) -> None:
    _db(
        lambda: SemanticPair.objects.create(
            request_id=plan.request_id,
            model=plan.key.model,
            namespace=plan.key.namespace,
            partition=plan.key.partition,
            asked_text=plan.key.conversation_text,
            cached_key=hit.entry.key,
            cached_text=cached_text,
            similarity=hit.similarity or 0.0,
            served=plan.semantic_mode == "on",
        )
    )


def is_storable(completion: dict[str, Any]) -> bool:
    choices = completion.get("choices")
    return bool(choices) and all(
        isinstance(c, dict) and c.get("finish_reason") in STORABLE_FINISH_REASONS for c in choices
    )


def store(
    plan: CachePlan, completion: dict[str, Any], endpoint_name: str, *, wait: bool = False
) -> Entry | None:
    """Write a clean, complete answer to every tier; None when it must not be stored.

    The lower tiers are written by the writer thread unless `wait` (for callers off the
    hot path that must know the answer is stored, like warming)."""
    if not plan.store or not is_storable(completion):
        return None
    now = time.time()
    usage = completion.get("usage") or {}
    entry = Entry(
        key=plan.key.exact,
        namespace=plan.key.namespace,
        model=plan.key.model,
        partition=plan.key.partition,
        prompt_text=plan.key.conversation_text,
        semantic_eligible=plan.key.semantic_eligible,
        request=plan.request,
        response=completion,
        tokens_in=token_count(usage.get("prompt_tokens")),
        tokens_out=token_count(usage.get("completion_tokens")),
        endpoint=endpoint_name,
        created_at=now,
        expires_at=now + plan.ttl_s,
    )
    _put_l1(entry, now)
    semantic_sync.known_keys.add(entry.key)
    if wait:
        rows = _write_l2_and_index([(entry, plan)], now)
        _db(functools.partial(_put_rows_holding_purges, rows))
    else:
        lower_writer.put(entry, plan)
    return entry


def _write_l2_and_index(batch: list[tuple[Entry, CachePlan]], now: float) -> list[L3Row]:
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
            semantic.index().add(
                entry.partition, entry.key, entry.prompt_text, entry.expires_at, vector,
                owner=(entry.namespace, entry.model),
            )  # fmt: skip
        embedding = semantic.to_bytes(vector) if vector is not None else None
        rows.append(DatabaseTier.row(entry, embedding))
    return rows


# --- coalescing identical concurrent misses ----------------------------------------


def waiting_for(plan: CachePlan) -> "asyncio.Future[Entry | None] | None":
    """The in-flight leader's future for this exact request, if there is one."""
    return _flights.get(plan.key.exact) if plan.read else None


def lead(plan: CachePlan) -> bool:
    """Become the one request that calls upstream for this key (when it will store)."""
    if not plan.store or plan.key.exact in _flights:
        return False
    _flights[plan.key.exact] = asyncio.get_running_loop().create_future()
    return True


def land(plan: CachePlan, entry: Entry | None) -> None:
    future = _flights.pop(plan.key.exact, None)
    if future is not None and not future.done():
        future.set_result(entry)


# --- helpers -----------------------------------------------------------------------


def _fresh(entry: Entry, plan: CachePlan, now: float) -> bool:
    if entry.expires_at <= now:
        return False
    return plan.max_age_s is None or now - entry.created_at <= plan.max_age_s


def _count_hit(key: str) -> None:
    _hit_counts[key] += 1
    if time.monotonic() - _last_hit_flush[0] > 2:
        _last_hit_flush[0] = time.monotonic()
        batch = dict(_hit_counts)
        _hit_counts.clear()
        _io.submit(_db, lambda: tiers().l3.count_hits(batch))


def _db(operation: Callable[[], T]) -> T | None:
    """Run a database call from a cache thread; a failure is a miss, never an error."""
    try:
        return operation()
    except Exception:
        log.warning("L3 cache (database) call failed", exc_info=True)
        close_old_connections()
        return None


async def _in_thread(function: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(_io, function, *args)
