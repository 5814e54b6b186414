"""The dashboard's numbers for one window, computed from rollups (not raw records).

`Snapshot` is the one message shape shared by the producer, the websocket consumer,
the JSON API, the page and the tests.
"""

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

from django.utils import timezone

from monitoring import histogram as hist
from monitoring import metrics, recorder
from monitoring.models import RequestRecord, Rollup
from routing import breaker, registry
from routing.models import EndpointProbe

WINDOWS: dict[str, tuple[int, int]] = {  # name: (length, rollup bucket), seconds
    "15m": (900, 60),
    "1h": (3600, 60),
    "24h": (86400, 3600),
    "7d": (7 * 86400, 3600),
}
ERROR_OUTCOMES = frozenset({"upstream_error", "internal_error"})
REJECTED_OUTCOMES = frozenset({"client_error", "auth_error"})


class Kpis(TypedDict):
    requests: int
    errors: int
    error_rate: float
    rejected: int
    coverage: float  # request records written ÷ requests received (this process)
    records_pending: int
    hit_rate: float
    exact_hits: int
    semantic_hits: int
    cost_usd: float
    cost_saved_usd: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


class Series(TypedDict):
    t: list[str]
    requests: list[int]
    errors: list[int]
    exact_hits: list[int]
    semantic_hits: list[int]
    p50_ms: list[float | None]
    p95_ms: list[float | None]
    p99_ms: list[float | None]


class ModelRow(TypedDict):
    model: str
    requests: int
    errors: int
    hit_rate: float
    p95_ms: float | None
    cost_usd: float
    cost_saved_usd: float


class EndpointRow(TypedDict):
    endpoint: str
    circuit: str
    requests: int
    error_rate: float
    p95_ms: float | None
    last_error: str


class ErrorRow(TypedDict):
    at: str
    request_id: str
    model: str
    endpoint: str
    status: int
    error_class: str
    message: str
    tips: list[str]


class Snapshot(TypedDict):
    window: str
    generated_at: str
    kpis: Kpis
    tiers: dict[str, int]
    series: Series
    by_model: list[ModelRow]
    endpoints: list[EndpointRow]
    recent_errors: list[ErrorRow]


def compute(window: str = "1h") -> Snapshot:
    length_s, bucket_s = WINDOWS[window]
    now = timezone.now()
    since = now - timedelta(seconds=length_s)
    rows = list(
        Rollup.objects.filter(bucket_s=bucket_s, bucket_start__gte=since, is_warming=False).values(
            "bucket_start",
            "model",
            "endpoint",
            "outcome",
            "cache_outcome",
            "cache_tier",
            "requests",
            "cost_usd",
            "cost_saved_usd",
            "histogram",
        )
    )
    recent = _recent_errors(since)
    return Snapshot(
        window=window,
        generated_at=now.isoformat(),
        kpis=_kpis(rows),
        tiers=_tiers(rows),
        series=_series(rows, since, bucket_s, length_s),
        by_model=_by_model(rows),
        endpoints=_endpoints(rows, recent),
        recent_errors=recent,
    )


def _kpis(rows: list[dict[str, Any]]) -> Kpis:
    requests = sum(r["requests"] for r in rows)
    errors = sum(r["requests"] for r in rows if r["outcome"] in ERROR_OUTCOMES)
    exact = sum(r["requests"] for r in rows if r["cache_outcome"] == "exact")
    semantic = sum(r["requests"] for r in rows if r["cache_outcome"] == "semantic")
    looked_up = sum(r["requests"] for r in rows if r["cache_outcome"])
    merged = hist.merge(r["histogram"] for r in rows)
    received = metrics.requests_received()
    return Kpis(
        requests=requests,
        errors=errors,
        error_rate=_ratio(errors, requests),
        rejected=sum(r["requests"] for r in rows if r["outcome"] in REJECTED_OUTCOMES),
        coverage=_ratio(metrics.records_written(), received) if received else 1.0,
        records_pending=recorder.pending_count(),
        hit_rate=_ratio(exact + semantic, looked_up),
        exact_hits=exact,
        semantic_hits=semantic,
        cost_usd=round(sum(r["cost_usd"] for r in rows), 6),
        cost_saved_usd=round(sum(r["cost_saved_usd"] for r in rows), 6),
        p50_ms=_round(hist.percentile(merged, 0.50)),
        p95_ms=_round(hist.percentile(merged, 0.95)),
        p99_ms=_round(hist.percentile(merged, 0.99)),
    )


def _tiers(rows: list[dict[str, Any]]) -> dict[str, int]:
    tiers = {"L1": 0, "L2": 0, "L3": 0}
    for row in rows:
        if row["cache_tier"] in tiers:
            tiers[row["cache_tier"]] += row["requests"]
    return tiers


def _series(rows: list[dict[str, Any]], since: Any, bucket_s: int, length_s: int) -> Series:
    first = since.timestamp() // bucket_s * bucket_s + bucket_s
    starts = [first + i * bucket_s for i in range(length_s // bucket_s)]
    by_start: dict[float, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_start[row["bucket_start"].timestamp()].append(row)
    series = Series(t=[], requests=[], errors=[], exact_hits=[], semantic_hits=[], p50_ms=[],
                    p95_ms=[], p99_ms=[])  # fmt: skip
    for start in starts:
        group = by_start.get(start, [])
        merged = hist.merge(r["histogram"] for r in group)
        series["t"].append(datetime.fromtimestamp(start, tz=UTC).isoformat())
        series["requests"].append(sum(r["requests"] for r in group))
        series["errors"].append(sum(r["requests"] for r in group if r["outcome"] in ERROR_OUTCOMES))
        series["exact_hits"].append(
            sum(r["requests"] for r in group if r["cache_outcome"] == "exact")
        )
        series["semantic_hits"].append(
            sum(r["requests"] for r in group if r["cache_outcome"] == "semantic")
        )
        for name, q in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)):
            series[name].append(_round(hist.percentile(merged, q)))  # type: ignore[literal-required]
    return series


def _by_model(rows: list[dict[str, Any]]) -> list[ModelRow]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["model"]:
            groups[row["model"]].append(row)
    result = []
    for model, group in groups.items():
        requests = sum(r["requests"] for r in group)
        hits = sum(r["requests"] for r in group if r["cache_outcome"] in ("exact", "semantic"))
        result.append(
            ModelRow(
                model=model,
                requests=requests,
                errors=sum(r["requests"] for r in group if r["outcome"] in ERROR_OUTCOMES),
                hit_rate=_ratio(hits, sum(r["requests"] for r in group if r["cache_outcome"])),
                p95_ms=_round(hist.percentile(hist.merge(r["histogram"] for r in group), 0.95)),
                cost_usd=round(sum(r["cost_usd"] for r in group), 6),
                cost_saved_usd=round(sum(r["cost_saved_usd"] for r in group), 6),
            )
        )
    return sorted(result, key=lambda row: -row["requests"])


def _endpoints(rows: list[dict[str, Any]], recent: list[ErrorRow]) -> list[EndpointRow]:
    """Every configured endpoint: its circuit (this process), traffic and last error."""
    snapshot = registry.current()
    probes = {p.endpoint_id: p for p in EndpointProbe.objects.filter(ok=False)}
    result = []
    for endpoint in sorted(snapshot.endpoints.values(), key=lambda e: e.name):
        group = [r for r in rows if r["endpoint"] == endpoint.name]
        requests = sum(r["requests"] for r in group)
        errors = sum(r["requests"] for r in group if r["outcome"] in ERROR_OUTCOMES)
        last = next((e for e in recent if e["endpoint"] == endpoint.name), None)
        probe = probes.get(endpoint.id)
        result.append(
            EndpointRow(
                endpoint=endpoint.name,
                circuit=breaker.states()[endpoint.id].state
                if endpoint.id in breaker.states()
                else breaker.CLOSED,
                requests=requests,
                error_rate=_ratio(errors, requests),
                p95_ms=_round(hist.percentile(hist.merge(r["histogram"] for r in group), 0.95)),
                last_error=last["message"] if last else (probe.message if probe else ""),
            )
        )
    return result


def _recent_errors(since: Any, limit: int = 20) -> list[ErrorRow]:
    records = RequestRecord.objects.filter(
        created_at__gte=since, outcome__in=ERROR_OUTCOMES
    ).order_by("-created_at")[:limit]
    return [
        ErrorRow(
            at=record.created_at.isoformat(),
            request_id=record.request_id,
            model=record.model,
            endpoint=record.attempt_log[-1]["endpoint"] if record.attempt_log else record.endpoint,
            status=record.status_code,
            error_class=record.error_class,
            message=record.error_message,
            tips=record.error_tips,
        )
        for record in records
    ]


def _ratio(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def _round(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None
