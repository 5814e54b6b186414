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

from monitoring import key_spend, labels, metrics, recorder, rollups
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
    errors: int  # every endpoint failed, or a BeastMode bug (ERROR_OUTCOMES)
    error_rate: float
    rejected: int  # the caller's request or key was refused: 4xx (REJECTED_OUTCOMES)
    rejected_rate: float
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
    bucket_s: int
    t: list[str]  # bucket starts, from the window's first traffic when it is younger
    requests: list[int]
    errors: list[int]
    rejected: list[int]
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
    """The latest error of one kind (error class, model, status) and how many of that kind
    the errors read (RECENT_ERRORS_READ, newest first) hold; `cause_of` names the error
    this one explains ("circuit_open") when it was looked up for that reason."""

    at: str
    first_at: str
    count: int
    cause_of: str
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
    top_keys: list[key_spend.KeyRow]  # by spend in the window
    keys_near_budget: list[key_spend.KeyRow]  # by share of their period's budget spent


# Every list the snapshot sends is capped (models by requests, endpoints by name).
MAX_ROWS = 50
# Recent errors: the newest this many error records are read (through the partial index
# monitoring_recent_errors) and shown as at most MAX_ERROR_KINDS kinds, newest first.
RECENT_ERRORS_READ = 500
MAX_ERROR_KINDS = 20


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
        series=_series(totals, _bucket_starts(totals, since, bucket_s, length_s), bucket_s),
        by_model=_by_model(pairs),
        endpoints=_endpoints(pairs, recent),
        recent_errors=recent,
        top_keys=key_spend.top_spenders(since, now, bucket_s),
        keys_near_budget=key_spend.near_budget(now),
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
        rejected_rate=_ratio(window["rejected"], requests),
        coverage=_ratio(metrics.records_written(), received) if received else 1.0,
        records_pending=recorder.pending_count(),
        hit_rate=_ratio(exact + semantic, window["looked_up"]),
        exact_hits=exact,
        semantic_hits=semantic,
        cost_usd=_usd(window["cost_usd"]),
        cost_saved_usd=_usd(window["cost_saved_usd"]),
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


def _bucket_starts(
    totals: list[dict[str, Any]], since: datetime, bucket_s: int, length_s: int
) -> list[float]:
    """The series' buckets (start, epoch seconds): the window's, or from its first traffic
    on when nothing was recorded before it (a gateway younger than the window), so a few
    minutes of traffic are not squeezed into the right edge of an hour."""
    first = since.timestamp() // bucket_s * bucket_s + bucket_s
    starts = [first + i * bucket_s for i in range(length_s // bucket_s)]
    if not totals:
        return starts
    first_traffic = min(row["bucket_start"] for row in totals).timestamp()
    if first_traffic <= first or _has_rollups_before(first, bucket_s):
        return starts
    return [start for start in starts if start >= first_traffic]


def _has_rollups_before(start: float, bucket_s: int) -> bool:
    before = datetime.fromtimestamp(start, tz=UTC)
    return DashboardRollup.objects.filter(
        bucket_s=bucket_s, is_total=True, bucket_start__lt=before
    ).exists()


def _series(totals: list[dict[str, Any]], starts: list[float], bucket_s: int) -> Series:
    by_start = {row["bucket_start"].timestamp(): row for row in totals}
    empty: dict[str, Any] = {"requests": 0, "errors": 0, "rejected": 0, "exact_hits": 0,
                             "semantic_hits": 0, "histogram": []}  # fmt: skip
    series = Series(bucket_s=bucket_s, t=[], requests=[], errors=[], rejected=[], exact_hits=[],
                    semantic_hits=[], p50_ms=[], p95_ms=[], p99_ms=[])  # fmt: skip
    for start in starts:
        row = by_start.get(start, empty)
        series["t"].append(datetime.fromtimestamp(start, tz=UTC).isoformat())
        for name in ("requests", "errors", "rejected", "exact_hits", "semantic_hits"):
            series[name].append(row[name])
        p50, p95, p99 = rollups.dense_percentiles(row["histogram"], (0.5, 0.95, 0.99))
        series["p50_ms"].append(_round(p50))
        series["p95_ms"].append(_round(p95))
        series["p99_ms"].append(_round(p99))
    return series


def _by_model(pairs: dict[tuple[str, str], dict[str, Any]]) -> list[ModelRow]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (model, _), sums in pairs.items():
        if model:  # rows written before labels were bounded may hold a client's names
            groups[labels.model_label(model)].append(sums)
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
                cost_usd=_usd(sums["cost_usd"]),
                cost_saved_usd=_usd(sums["cost_saved_usd"]),
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


def _recent_errors(since: datetime) -> list[ErrorRow]:
    """The newest error of each kind, with its count among the newest RECENT_ERRORS_READ.

    A kind is (error class, model, status): a storm of one kind (an open circuit's fast
    failures) stays one row and leaves the others on the page. The upstream error behind
    a model's `circuit_open` is looked up when the errors read hold none of that model's."""
    # Sorted: the same SQL every time, which the partial index monitoring_recent_errors matches.
    errors = RequestRecord.objects.filter(
        created_at__gte=since, outcome__in=sorted(ERROR_OUTCOMES), is_warming=False
    )  # warming is not client traffic (as in the rollups)
    read = errors.order_by("-created_at").values_list(
        "pk", "created_at", "error_class", "model", "status_code"
    )[:RECENT_ERRORS_READ]
    kinds: dict[tuple[str, str, int], dict[str, Any]] = {}
    for pk, at, error_class, model, status in read:
        kind = kinds.setdefault((error_class, model, status), {"pk": pk, "count": 0})
        kind.update(count=kind["count"] + 1, first_at=at)
    shown = list(kinds.values())[:MAX_ERROR_KINDS]
    failing = {model for error_class, model, _ in kinds if error_class != "circuit_open"}
    for error_class, model, _ in list(kinds)[:MAX_ERROR_KINDS]:
        if error_class == "circuit_open" and model not in failing:
            failing.add(model)
            cause = _cause_of_open_circuit(errors, model)
            if cause is not None:
                shown.append({"pk": cause.pk, "count": 1, "first_at": cause.created_at,
                              "cause_of": "circuit_open"})  # fmt: skip
    records = RequestRecord.objects.in_bulk([kind["pk"] for kind in shown])
    return sorted(  # (a record pruned in between is left out)
        (_error_row(records[kind["pk"]], kind) for kind in shown if kind["pk"] in records),
        key=lambda row: row["at"],
        reverse=True,
    )


def _cause_of_open_circuit(errors: QuerySet[RequestRecord], model: str) -> RequestRecord | None:
    """The model's latest error that was not a fast `circuit_open` failure. A circuit
    lets a probe through every cooldown, so this reads at most one cooldown of the
    model's records (index on model, created_at)."""
    return (
        errors.filter(model=model)
        .exclude(error_class="circuit_open")
        .order_by("-created_at")
        .only("pk", "created_at")
        .first()
    )


def _error_row(record: RequestRecord, kind: dict[str, Any]) -> ErrorRow:
    return ErrorRow(
        at=record.created_at.isoformat(),
        first_at=kind["first_at"].isoformat(),
        count=kind["count"],
        cause_of=kind.get("cause_of", ""),
        request_id=record.request_id,
        model=labels.model_label(record.model),
        endpoint=record.attempt_log[-1]["endpoint"] if record.attempt_log else record.endpoint,
        status=record.status_code,
        error_class=record.error_class,
        message=record.error_message,
        tips=record.error_tips,
    )


def _p95(histogram: rollups.Dense) -> float | None:
    return rollups.dense_percentiles(histogram, (0.95,))[0]


def _ratio(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def _usd(value: float) -> float:
    """To a billionth of a dollar: the page shows significant digits ($0.000123, not
    $0.0001), which a fixed 4 or 6 decimals would cut off."""
    return round(value, 9)


def _round(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None
