"""The cache as the API sees it: plan a request's caching, look it up, store answers.

Lookup goes L1 → L2 → L3 and promotes a lower-tier hit upward; an L1 hit touches
neither the database nor a thread. Stores write L1 at once and the lower tiers from one
writer thread, in batches. Identical concurrent misses share one upstream call
(cache/flights.py).
"""

import asyncio
import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from django.conf import settings

from beastmode.lib.chat_request import ChatRequest
from beastmode.lib.usage import token_count
from cache import controls, keys
from cache.layers import db, is_purged, tiers
from cache.models import SemanticPair
from cache.policy import CachePolicy
from cache.semantic import english, false_pairs, index_sync, similarity, vector_index
from cache.semantic.embedder import get_embedder
from cache.tiers import Entry
from cache.writer import lower_writer, put_rows_holding_purges, write_l2_and_index

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


_io = ThreadPoolExecutor(max_workers=4, thread_name_prefix="cache-io")


def plan(
    *,
    namespace: str,
    policy: CachePolicy,
    chat: ChatRequest,
    cache_control: str | None,
    request_id: str = "",
) -> CachePlan | None:
    """How this request uses the cache; None when the model's cache is off."""
    wanted = controls.parse(chat.cache_field, cache_control)
    if not policy.enabled:
        return None
    return CachePlan(
        key=keys.derive(namespace, chat.model, chat.body, policy.upstream),
        request=chat.body,
        request_id=request_id,
        read=not wanted.no_cache,
        store=not wanted.no_store,
        ttl_s=wanted.ttl_s or policy.ttl_s or settings.CACHE_L3_TTL_S,  # ttl 0 is no-store
        max_age_s=wanted.max_age_s,
        semantic_mode=policy.semantic_mode,
        threshold=policy.threshold,
    )


async def lookup(plan: CachePlan) -> Hit | None:
    """A hit in any tier, exact or semantic. A lookup that had to wait (for the lower tiers
    or the semantic index) looks in L1 again at the end: an identical request may have
    stored its answer meanwhile, and this one would otherwise call upstream again."""
    now = time.time()
    hit = _l1_hit(plan, now)
    waited = False
    if hit is None and (
        tiers().l2.available or index_sync.known_keys.might_contain(plan.key.exact)
    ):
        # One thread hop covers both lower tiers.
        hit, waited = await in_io_thread(_lower_tier_hit, plan, now), True
    if hit is None and plan.semantic:
        hit, waited = await in_io_thread(_semantic_hit, plan, now), True
        if hit is not None and plan.semantic_mode == "shadow":
            plan.shadow, hit = hit, None
    if hit is None and waited:
        hit = _l1_hit(plan, time.time())
    if hit is not None:
        lower_writer.count_hit(hit.entry.key)
    return hit


def _l1_hit(plan: CachePlan, now: float) -> Hit | None:
    entry = tiers().l1.get(plan.key.exact, now)
    return Hit(entry, "exact", "L1") if entry is not None and is_fresh(entry, plan, now) else None


def _lower_tier_hit(plan: CachePlan, now: float) -> Hit | None:
    found = _fetch(plan.key.exact, plan, now)
    return Hit(found[0], "exact", found[1]) if found else None


def _fetch(
    key: str, plan: CachePlan, now: float, *, promote: bool = True
) -> tuple[Entry, str] | None:
    """An entry from L1, else L2, else L3 (promoted upward unless not `promote`), with the
    tier it came from."""
    layers = tiers()
    if (entry := layers.l1.get(key, now)) is not None and is_fresh(entry, plan, now):
        return entry, "L1"
    entry = layers.l2.get(key) if layers.l2.available else None
    tier = "L2"
    if entry is not None and is_purged(entry):
        layers.l2.delete(key)  # a copy written before the purge reached its writer
        entry = None
    if entry is None or not is_fresh(entry, plan, now):
        if not index_sync.known_keys.might_contain(key):
            return None  # L3 cannot have it: no database round trip on a plain miss
        entry = db(lambda: layers.l3.get(key, now), wait_s=settings.CACHE_DATABASE_WAIT_S)
        tier = "L3"
        if entry is None or not is_fresh(entry, plan, now) or is_purged(entry):
            return None
        if promote:
            layers.l2.put(entry, now)
    if promote:
        _put_l1(entry, now)
    return entry, tier


def _put_l1(entry: Entry, now: float) -> None:
    """Put an entry in L1 unless a purge covers it. Checked again after the put: a purge
    applied in between (logged, then L1 purged) would otherwise miss this entry, and L1
    hits are never checked (they must not cost more than a dict lookup)."""
    layers = tiers()
    layers.l1.put(entry, now)
    if is_purged(entry):
        layers.l1.delete(entry.key)


def _semantic_hit(plan: CachePlan, now: float) -> Hit | None:
    """The best cached conversation of the same partition that is similar enough and that
    no guard refuses; also logs the pair (served or shadow) for evaluation."""
    asked = plan.key.conversation_text
    plan.vector = get_embedder().embed_whole([asked])[0]
    if plan.vector is None:
        plan.too_long = True
        return None
    floor = similarity.min_cosine(plan.threshold)
    # The index keeps no text: the candidates that can be served are read from the tiers
    # (without promoting them), and one that is gone (purged, expired) is left out.
    candidates = []
    for candidate in vector_index.index().search(
        plan.key.partition, plan.vector, k=similarity.TOP_K, floor=floor
    ):
        if (
            candidate.cosine < floor
            or (found := _fetch(candidate.key, plan, now, promote=False)) is None
        ):
            continue
        text = found[0].prompt_text
        if not false_pairs.is_marked(plan.key.partition, asked, text):
            candidates.append((candidate, text, found))
    chosen = similarity.choose(
        asked, [(text, c.cosine) for c, text, _ in candidates], threshold=plan.threshold
    )
    if chosen is None:
        return None
    candidate, text, (entry, tier) = candidates[chosen]
    if tier == "L3":
        tiers().l2.put(entry, now)
    _put_l1(entry, now)
    hit = Hit(entry, "semantic", tier, round(similarity.score(candidate.cosine), 4))
    submit_io(_log_pair, plan, hit, text)
    return hit


def _log_pair(plan: CachePlan, hit: Hit, cached_text: str) -> None:
    db(
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
    entry = entry_for(plan, completion, endpoint_name, now)
    _put_l1(entry, now)
    index_sync.known_keys.add(entry.key)
    if wait:
        rows = write_l2_and_index([(entry, plan)], now)
        db(functools.partial(put_rows_holding_purges, rows))
    else:
        lower_writer.put(entry, plan)
    return entry


def entry_for(plan: CachePlan, completion: dict[str, Any], endpoint_name: str, now: float) -> Entry:
    """The cache entry of an answer (stored or not: flights share unstored ones too)."""
    usage = completion.get("usage") or {}
    return Entry(
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


# --- helpers -----------------------------------------------------------------------


def is_fresh(entry: Entry, plan: CachePlan, now: float) -> bool:
    """Neither expired nor older than the request's max-age."""
    if entry.expires_at <= now:
        return False
    return plan.max_age_s is None or now - entry.created_at <= plan.max_age_s


async def in_io_thread(function: Callable[..., T], *args: Any) -> T:
    """Run blocking cache I/O (Redis, the database) on the cache's threads."""
    return await asyncio.get_running_loop().run_in_executor(_io, function, *args)


def submit_io(function: Callable[..., Any], *args: Any) -> None:
    """Run blocking cache I/O on the cache's threads without waiting for it."""
    _io.submit(function, *args)
