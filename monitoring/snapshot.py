"""The dashboard's numbers for one window, computed from DashboardRollup rows (not raw
records; only the recent errors come from the records, through an index).

`DashboardSnapshot` is the one message shape shared by the producer, the websocket consumer,
the JSON API, the page and the tests.
"""

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

from django.db.models import Q, QuerySet
from django.utils import timezone

from monitoring import metrics, recorder, rollups
from monitoring.models import ERROR_OUTCOMES, DashboardRollup, RequestRecord
from routing import breaker, registry
from routing.models import EndpointProbe

WINDOWS: dict[str, tuple[int, int]] = {  # name: (length, rollup bucket), seconds
    "15m": (900, 60),
    "1h": (3600, 60),
    "24h": (86400, 3600),
    "7d": (7 * 86400, 3600),
}


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


class DashboardSnapshot(TypedDict):
    window: str
    generated_at: str
    kpis: Kpis
    tiers: dict[str, int]
    series: Series
    by_model: list[ModelRow]
    endpoints: list[EndpointRow]
    recent_errors: list[ErrorRow]


# Every list the snapshot sends is capped (models by requests, endpoints by name).
MAX_ROWS = 50


def compute(window: str = "1h") -> DashboardSnapshot:
    length_s, bucket_s = WINDOWS[window]
    now = timezone.now()
    since = now - timedelta(seconds=length_s)
    totals, pairs = _rollups(since, now, bucket_s)
    recent = _recent_errors(since)
    return DashboardSnapshot(
        window=window,
        generated_at=now.isoformat(),
        kpis=_kpis(totals),
        tiers=_tiers(totals),
        series=_series(totals, since, bucket_s, length_s),
        by_model=_by_model(pairs),
        endpoints=_endpoints(pairs, recent),
        recent_errors=recent,
    )


def _rollups(
    since: datetime, now: datetime, bucket_s: int
) -> tuple[list[dict[str, Any]], dict[tuple[str, str], dict[str, Any]]]:
    """The window's total rows (one per bucket) and its sums per (model, endpoint)."""
    rows = window_rows(since, now, bucket_s).values(
        "bucket_start", "is_total", "model", "endpoint", *rollups.COUNTS, "histogram"
    )
    totals, by_pair = [], defaultdict(list)
    for row in rows:
        if row["is_total"]:
            totals.append(row)
        else:
            by_pair[(row["model"], row["endpoint"])].append(row)
    return totals, {pair: _summed(group) for pair, group in by_pair.items()}


def window_rows(since: datetime, now: datetime, bucket_s: int) -> QuerySet[DashboardRollup]:
    """Every total row of the window, and pair rows where whole coarser buckets inside the
    window (the days of a 7d window) stand in for the buckets they hold: a long window
    reads days, not hours, per (model, endpoint)."""
    in_window = Q(bucket_s=bucket_s, bucket_start__gte=since)
    pairs = in_window & Q(is_total=False)
    coarse_s = next((size for size in rollups.DASHBOARD_BUCKETS_S if size > bucket_s), None)
    if coarse_s is not None:
        whole_from = _ceil(since, coarse_s)
        whole_to = rollups.bucket_start(now, coarse_s)  # the current one is not whole yet
        if whole_from < whole_to:
            whole = Q(bucket_start__gte=whole_from, bucket_start__lt=whole_to)
            pairs = (pairs & ~whole) | (whole & Q(bucket_s=coarse_s, is_total=False))
    return DashboardRollup.objects.filter((in_window & Q(is_total=True)) | pairs)


def _ceil(moment: datetime, bucket_s: int) -> datetime:
    return datetime.fromtimestamp(-(-moment.timestamp() // bucket_s) * bucket_s, tz=UTC)


def _summed(rows: list[dict[str, Any]]) -> dict[str, Any]:
    summed: dict[str, Any] = {name: sum(r[name] for r in rows) for name in rollups.COUNTS}
    summed["histogram"] = rollups.merge_dense(r["histogram"] for r in rows)
    return summed


def _kpis(totals: list[dict[str, Any]]) -> Kpis:
    window = _summed(totals)
    requests, errors = window["requests"], window["errors"]
    exact, semantic = window["exact_hits"], window["semantic_hits"]
    p50, p95, p99 = rollups.dense_percentiles(window["histogram"], (0.5, 0.95, 0.99))
    received = metrics.records_submitted()
    return Kpis(
        requests=requests,
        errors=errors,
        error_rate=_ratio(errors, requests),
        rejected=window["rejected"],
        coverage=_ratio(metrics.records_written(), received) if received else 1.0,
        records_pending=recorder.pending_count(),
        hit_rate=_ratio(exact + semantic, window["looked_up"]),
        exact_hits=exact,
        semantic_hits=semantic,
        cost_usd=round(window["cost_usd"], 6),
        cost_saved_usd=round(window["cost_saved_usd"], 6),
        p50_ms=_round(p50),
        p95_ms=_round(p95),
        p99_ms=_round(p99),
    )


def _tiers(totals: list[dict[str, Any]]) -> dict[str, int]:
    return {
        "L1": sum(r["l1_hits"] for r in totals),
        "L2": sum(r["l2_hits"] for r in totals),
        "L3": sum(r["l3_hits"] for r in totals),
    }


def _series(totals: list[dict[str, Any]], since: Any, bucket_s: int, length_s: int) -> Series:
    first = since.timestamp() // bucket_s * bucket_s + bucket_s
    starts = [first + i * bucket_s for i in range(length_s // bucket_s)]
    by_start = {row["bucket_start"].timestamp(): row for row in totals}
    empty: dict[str, Any] = {"requests": 0, "errors": 0, "exact_hits": 0, "semantic_hits": 0,
                             "histogram": []}  # fmt: skip
    series = Series(t=[], requests=[], errors=[], exact_hits=[], semantic_hits=[], p50_ms=[],
                    p95_ms=[], p99_ms=[])  # fmt: skip
    for start in starts:
        row = by_start.get(start, empty)
        series["t"].append(datetime.fromtimestamp(start, tz=UTC).isoformat())
        series["requests"].append(row["requests"])
        series["errors"].append(row["errors"])
        series["exact_hits"].append(row["exact_hits"])
        series["semantic_hits"].append(row["semantic_hits"])
        p50, p95, p99 = rollups.dense_percentiles(row["histogram"], (0.5, 0.95, 0.99))
        series["p50_ms"].append(_round(p50))
        series["p95_ms"].append(_round(p95))
        series["p99_ms"].append(_round(p99))
    return series


def _by_model(pairs: dict[tuple[str, str], dict[str, Any]]) -> list[ModelRow]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (model, _), sums in pairs.items():
        if model:
            groups[model].append(sums)
    result = []
    for model, group in groups.items():
        sums = _summed(group)
        result.append(
            ModelRow(
                model=model,
                requests=sums["requests"],
                errors=sums["errors"],
                hit_rate=_ratio(sums["exact_hits"] + sums["semantic_hits"], sums["looked_up"]),
                p95_ms=_round(_p95(sums["histogram"])),
                cost_usd=round(sums["cost_usd"], 6),
                cost_saved_usd=round(sums["cost_saved_usd"], 6),
            )
        )
    return sorted(result, key=lambda row: -row["requests"])[:MAX_ROWS]


def _endpoints(
    pairs: dict[tuple[str, str], dict[str, Any]], recent: list[ErrorRow]
) -> list[EndpointRow]:
    """Every configured endpoint: its circuit (this process), traffic and last error."""
    snapshot = registry.current()
    probes = {p.endpoint_id: p for p in EndpointProbe.objects.filter(ok=False)}
    states = breaker.states()
    result = []
    for endpoint in sorted(snapshot.endpoints.values(), key=lambda e: e.name)[:MAX_ROWS]:
        sums = _summed([s for (_, name), s in pairs.items() if name == endpoint.name])
        last = next((e for e in recent if e["endpoint"] == endpoint.name), None)
        probe = probes.get(endpoint.id)
        result.append(
            EndpointRow(
                endpoint=endpoint.name,
                circuit=states[endpoint.id].state if endpoint.id in states else breaker.CLOSED,
                requests=sums["requests"],
                error_rate=_ratio(sums["errors"], sums["requests"]),
                p95_ms=_round(_p95(sums["histogram"])),
                last_error=last["message"] if last else (probe.message if probe else ""),
            )
        )
    return result


def _recent_errors(since: Any, limit: int = 20) -> list[ErrorRow]:
    # Sorted: the same SQL every time, which the partial index monitoring_recent_errors matches.
    records = RequestRecord.objects.filter(
        created_at__gte=since, outcome__in=sorted(ERROR_OUTCOMES), is_warming=False
    ).order_by("-created_at")[:limit]  # warming is not client traffic (as in the rollups)
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


def _p95(histogram: rollups.Dense) -> float | None:
    return rollups.dense_percentiles(histogram, (0.95,))[0]


def _ratio(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def _round(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None
