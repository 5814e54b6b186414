"""The cache as the API sees it: plan a request's caching, look it up, store answers.

Lookup goes L1 → L2 → L3 and promotes a lower-tier hit upward; an L1 hit touches
neither the database nor a thread. Stores write L1 at once and L2/L3 from a worker
thread. Identical concurrent misses are coalesced: one leader calls upstream, the
others wait for its answer.
"""

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from django.conf import settings
from django.db import close_old_connections

from cache import controls, keys
from cache.tiers import DatabaseTier, Entry, MemoryTier, RedisTier
from routing.registry import KeyConfig, RouteConfig
from routing.validation import ChatRequest

log = logging.getLogger(__name__)
T = TypeVar("T")

# Answers worth storing: complete, not cut short by max_tokens or a filter.
STORABLE_FINISH_REASONS = frozenset({"stop", "tool_calls", "function_call"})


@dataclass(frozen=True)
class CachePlan:
    key: keys.CacheKey
    request: dict[str, Any]  # the upstream body, kept so warming can refresh the answer
    read: bool
    store: bool
    ttl_s: int
    max_age_s: int | None


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
    key: KeyConfig, route: RouteConfig, chat: ChatRequest, cache_control: str | None
) -> CachePlan | None:
    """How this request uses the cache; None when the model's cache is off."""
    wanted = controls.parse(chat.cache_field, cache_control)
    if not route.cache_enabled:
        return None
    namespace = keys.namespace_for(
        key_hash_prefix=key.key_hash_prefix, shared_namespace=key.cache_namespace
    )
    return CachePlan(
        key=keys.derive(namespace, chat.model, chat.body),
        request=chat.body,
        read=not wanted.no_cache,
        store=not wanted.no_store,
        ttl_s=wanted.ttl_s or route.cache_ttl_s or settings.CACHE_L3_TTL_S,
        max_age_s=wanted.max_age_s,
    )


async def lookup(plan: CachePlan) -> Hit | None:
    now = time.time()
    entry = tiers().l1.get(plan.key.exact, now)
    if entry is not None and _fresh(entry, plan, now):
        hit: Hit | None = Hit(entry, "exact", "L1")
    else:
        # One thread hop covers both lower tiers.
        hit = await _in_thread(_lower_tier_hit, plan, now)
    if hit is not None:
        _count_hit(hit.entry.key)
    return hit


def _lower_tier_hit(plan: CachePlan, now: float) -> Hit | None:
    layers = tiers()
    entry = layers.l2.get(plan.key.exact) if layers.l2.available else None
    tier = "L2"
    if entry is None or not _fresh(entry, plan, now):
        entry = _db(lambda: layers.l3.get(plan.key.exact, now))
        tier = "L3"
        if entry is None or not _fresh(entry, plan, now):
            return None
        layers.l2.put(entry, now)
    layers.l1.put(entry, now)
    return Hit(entry, "exact", tier)


def is_storable(completion: dict[str, Any]) -> bool:
    choices = completion.get("choices")
    return bool(choices) and all(
        isinstance(c, dict) and c.get("finish_reason") in STORABLE_FINISH_REASONS for c in choices
    )


def store(
    plan: CachePlan, completion: dict[str, Any], endpoint_name: str, *, wait: bool = False
) -> Entry | None:
    """Write a clean, complete answer to every tier; None when it must not be stored.

    L2 and L3 are written from a worker thread unless `wait` (for callers off the hot path
    that must know the answer is stored, like warming)."""
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
        tokens_in=int(usage.get("prompt_tokens") or 0),
        tokens_out=int(usage.get("completion_tokens") or 0),
        endpoint=endpoint_name,
        created_at=now,
        expires_at=now + plan.ttl_s,
    )
    layers = tiers()
    layers.l1.put(entry, now)
    if wait:
        _store_lower(entry, now)
    else:
        _io.submit(_store_lower, entry, now)
    return entry


def _store_lower(entry: Entry, now: float) -> None:
    layers = tiers()
    layers.l2.put(entry, now)
    _db(lambda: layers.l3.put(entry))


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
