"""One request's bookkeeping, from arrival to its request record."""

import random
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from beastmode.lib.errors import GatewayError
from beastmode.lib.usage import token_count
from gateway import limits
from monitoring import recorder, records
from routing.registry import KeyConfig, RouteConfig
from routing.router import Trace

if TYPE_CHECKING:
    from cache.service import Hit

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")

_OUTCOME_BY_STATUS = {401: "auth_error", 403: "auth_error"}


def new_request_id(incoming: str | None) -> str:
    """The caller's x-request-id when it is sane, else a fresh one: the time in
    milliseconds, then 80 random bits. Ids that grow with time go to the end of the
    records' request_id index, where random ones dirtied a page of it per record (the
    record writer spent 30-40% more CPU per record on SQLite, docs/PERFORMANCE.md)."""
    if incoming and _SAFE_REQUEST_ID.match(incoming):
        return incoming
    # random, not os.urandom: an id is not a secret, and the system call cost more than
    # the rest of this function (random reseeds itself in forked children).
    return f"req_{time.time_ns() // 1_000_000:012x}{random.getrandbits(80):020x}"


@dataclass
class CacheOutcome:
    """How the cache took part in a request (for its record and response headers)."""

    outcome: str  # "miss", "exact", "semantic" or "shadow" ("": not looked up)
    tier: str = ""
    similarity: float | None = None
    entry_key: str = ""
    saved_tokens_in: int = 0
    saved_tokens_out: int = 0
    cost_saved_usd: float = 0.0

    @classmethod
    def of_hit(cls, hit: "Hit", route: RouteConfig) -> "CacheOutcome":
        """A hit saved what its answer cost upstream, at the answering endpoint's prices."""
        entry = hit.entry
        prices = next((ep for ep in route.endpoints if ep.name == entry.endpoint), None)
        prices = prices or (route.endpoints[0] if route.endpoints else None)
        return cls(
            outcome=hit.kind,
            tier=hit.tier,
            similarity=hit.similarity,
            # A shared, unstored answer (of no tier, flights.py) names no entry.
            entry_key=entry.key if hit.tier else "",
            saved_tokens_in=entry.tokens_in,
            saved_tokens_out=entry.tokens_out,
            cost_saved_usd=prices.cost_usd(entry.tokens_in, entry.tokens_out) if prices else 0.0,
        )

    @classmethod
    def of_miss(cls, shadow: "Hit | None") -> "CacheOutcome":
        """A miss; in shadow mode, with the semantic hit that would have been served."""
        if shadow is None:
            return cls("miss")
        return cls("shadow", similarity=shadow.similarity)

    def headers(self) -> list[tuple[bytes, bytes]]:
        headers = [(b"x-beastmode-cache", self.outcome.encode())]
        if self.tier:
            headers.append((b"x-beastmode-cache-tier", self.tier.encode()))
        if self.similarity is not None:
            headers.append((b"x-beastmode-similarity", f"{self.similarity:.4f}".encode()))
        return headers


@dataclass
class Exchange:
    request_id: str
    method: str
    path: str
    started: float = field(default_factory=time.perf_counter)
    created_at: datetime = field(default_factory=timezone.now)
    key: KeyConfig | None = None
    model: str = ""
    stream: bool = False
    is_async_job: bool = False
    is_warming: bool = False
    cache: CacheOutcome | None = None
    trace: Trace = field(default_factory=Trace)
    tokens_in: int = 0
    tokens_out: int = 0
    recorded: bool = False
    usage: limits.Usage | None = None  # what a limited key's request holds until it ends

    def add_usage(self, usage: dict[str, Any] | None) -> None:
        if isinstance(usage, dict):
            self.tokens_in = token_count(usage.get("prompt_tokens"))
            self.tokens_out = token_count(usage.get("completion_tokens"))

    def finish(
        self,
        *,
        status: int,
        outcome: str | None = None,
        error: GatewayError | None = None,
    ) -> None:
        """Submit this request's one record (later calls are ignored)."""
        if self.recorded:
            return
        self.recorded = True
        latency_ms = (time.perf_counter() - self.started) * 1000
        endpoint = self.trace.endpoint
        if outcome is None:
            outcome = _outcome(status, error)
        cache = self.cache or _NOT_CACHED
        cost_usd = endpoint.cost_usd(self.tokens_in, self.tokens_out) if endpoint else 0.0
        limits.settle(self.usage, self.tokens_in + self.tokens_out, cost_usd)
        recorder.submit(
            records.request_row(
                request_id=self.request_id,
                created_at=self.created_at,
                method=self.method,
                path=self.path,
                service_key_id=self.key.id if self.key else None,
                service_key_name=self.key.name if self.key else "",
                model=self.model,
                endpoint=_endpoint_name(self.trace),
                stream=self.stream,
                is_async_job=self.is_async_job,
                attempts=len(self.trace.attempts),
                fallbacks=self.trace.fallbacks,
                attempt_log=[vars(attempt) for attempt in self.trace.attempts],
                outcome=outcome,
                status_code=status,
                latency_ms=round(latency_ms, 3),
                upstream_latency_ms=round(self.trace.upstream_ms, 3),
                overhead_ms=round(max(0.0, latency_ms - self.trace.upstream_ms), 3),
                tokens_in=self.tokens_in,
                tokens_out=self.tokens_out,
                cost_usd=cost_usd,
                is_warming=self.is_warming,
                cache_outcome=cache.outcome,
                cache_tier=cache.tier,
                cache_similarity=cache.similarity,
                cache_entry_key=cache.entry_key,
                saved_tokens_in=cache.saved_tokens_in,
                saved_tokens_out=cache.saved_tokens_out,
                cost_saved_usd=cache.cost_saved_usd,
                error_class=error.error_class if error else "",
                error_message=error.message if error else "",
                error_tips=error.tips if error else [],
            )
        )


_NOT_CACHED = CacheOutcome(outcome="")  # the cache did not see the request (read only)


def _endpoint_name(trace: Trace) -> str:
    """The endpoint that answered; on a failure, the one whose failure the caller got."""
    if trace.endpoint:
        return trace.endpoint.name
    return trace.attempts[-1].endpoint if trace.attempts else ""


def _outcome(status: int, error: GatewayError | None) -> str:
    if error is None:
        return "success"
    if error.error_class == "internal_error":
        return "internal_error"
    if error.kind.type in ("upstream_error", "timeout_error", "service_unavailable"):
        return "upstream_error"
    if error.error_class == "upstream_rate_limited":
        return "upstream_error"
    if error.error_class in ("rate_limit_exceeded", "insufficient_quota"):
        return "rate_limited"
    return _OUTCOME_BY_STATUS.get(status, "client_error")
