"""Rollups and percentiles from merged histograms, checked against the raw records."""

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from monitoring import histogram, metrics, recorder, rollups, snapshot
from monitoring.models import DashboardRollup, RequestRecord
from monitoring.records import RequestRow, request_row
from routing import registry
from routing.models import KeySpend
from tests.personas import make_endpoint, make_model

NOW = datetime.now(UTC)


def record(n: int, latency_ms: float, **fields: Any) -> RequestRow:
    return request_row(**{
        "request_id": f"r{n}", "created_at": NOW - timedelta(seconds=n % 1800),
        "path": "/v1/chat/completions", "model": "demo", "endpoint": "ep", "outcome": "success",
        "status_code": 200, "latency_ms": latency_ms, "cost_usd": 0.001, **fields,
    })  # fmt: skip


def exact_percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def test_histogram_percentiles_are_within_5_percent_of_exact() -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(3, 1.2) for _ in range(20_000)]
    merged = histogram.merge(
        _histogram_of(values[i : i + 1000]) for i in range(0, len(values), 1000)
    )
    for q in (0.5, 0.95, 0.99):
        estimate = histogram.percentile(merged, q)
        assert estimate == pytest.approx(exact_percentile(values, q), rel=0.05)


def _histogram_of(values: list[float]) -> histogram.Histogram:
    h: histogram.Histogram = {}
    for value in values:
        histogram.add(h, value)
    return h


@pytest.fixture
def demo(transactional_db: None) -> None:
    """Model `demo` on endpoint `ep`, configured in this process's registry (a model that
    is not is counted as `unknown`)."""
    make_model("demo", [make_endpoint("ep", "http://127.0.0.1:9/v1")])
    registry.reload()


@pytest.mark.usefixtures("demo")
def test_rollups_written_with_records_match_the_raw_records(transactional_db: None) -> None:
    rng = random.Random(1)
    batch = [record(n, rng.lognormvariate(2, 1)) for n in range(1500)]
    batch += [record(n, 30.0, outcome="upstream_error", error_class="upstream_server_error",
                     status_code=502, request_id=f"e{n}") for n in range(100)]  # fmt: skip
    for start in range(0, len(batch), 400):  # several flushes update the same rows
        recorder._pending.extend(map(recorder._pack, batch[start : start + 400]))
        recorder.flush()

    mine = RequestRecord.objects.filter(path="/v1/chat/completions", model="demo", endpoint="ep")
    assert mine.count() == 1600
    pair_rows = DashboardRollup.objects.filter(is_total=False, model="demo", endpoint="ep")
    for bucket_s in rollups.DASHBOARD_BUCKETS_S:
        rows = pair_rows.filter(bucket_s=bucket_s)
        assert (sum(r.requests for r in rows), sum(r.errors for r in rows)) == (1600, 100)

    result = snapshot.compute("1h")
    # The snapshot covers every record of the window (a late one from an earlier test too).
    everything = RequestRecord.objects.all()
    latencies = list(everything.values_list("latency_ms", flat=True))
    kpis = result["kpis"]
    assert kpis["requests"] == everything.count() >= 1600
    assert kpis["errors"] == everything.filter(outcome="upstream_error").count() >= 100
    assert kpis["cost_usd"] == pytest.approx(sum(everything.values_list("cost_usd", flat=True)))
    for name, q in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)):
        assert kpis[name] == pytest.approx(exact_percentile(latencies, q), rel=0.05)
    assert result["by_model"][0]["model"] == "demo"
    assert sum(result["series"]["requests"]) == kpis["requests"]
    (failures,) = [e for e in result["recent_errors"] if e["model"] == "demo"]  # one kind
    assert (failures["error_class"], failures["count"]) == ("upstream_server_error", 100)


@pytest.mark.usefixtures("demo")
def test_warming_calls_are_not_client_traffic_in_errors_or_metrics(
    transactional_db: None,
) -> None:
    failed = {"outcome": "upstream_error", "status_code": 502}
    records = [
        record(1, 5.0, request_id="client", error_class="upstream_timeout", **failed),
        record(2, 5.0, request_id="warm", error_class="upstream_server_error", path="/warming",
               is_warming=True, **failed),
    ]  # fmt: skip
    for one in records:  # as recorder.submit does, without starting its writer thread
        metrics.observe_request(one)
        recorder._pending.append(recorder._pack(one))
    recorder.flush()

    errors = snapshot.compute("1h")["recent_errors"]
    assert [e["request_id"] for e in errors if e["request_id"] in ("client", "warm")] == ["client"]
    exposition = metrics.exposition()
    client = 'beastmode_requests_total{model="demo",outcome="upstream_error"} '
    warming = 'beastmode_warming_requests_total{model="demo",outcome="upstream_error"} '
    assert client in exposition and warming in exposition


def test_a_snapshot_costs_the_same_queries_however_many_records(transactional_db: None) -> None:
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            snapshot.compute("24h")
        return len(captured)

    recorder._pending.extend(recorder._pack(record(n, 5.0)) for n in range(50))
    recorder.flush()
    few = queries()
    recorder._pending.extend(
        recorder._pack(record(n, 5.0, request_id=f"more{n}")) for n in range(2000)
    )
    recorder.flush()
    assert queries() == few <= 6  # rollups, errors, probes, first traffic, keys by spend, budgets


def test_retention_prunes_old_records_and_rollups_but_keeps_hourly_history(
    transactional_db: None,
) -> None:
    from monitoring import tasks

    old = NOW - timedelta(days=40)
    recorder._pending.extend(
        map(
            recorder._pack,
            [record(1, 5.0, created_at=old, request_id="old", service_key_id=7), record(2, 5.0)],
        )
    )
    recorder.flush()

    # The dashboard's rows of the old minute go too (its total and its model's row), and
    # the key's minute row; its hour row stays as the dashboard's do, its day for budgets.
    pruned = tasks.prune_records.apply().get()
    assert pruned == {"records": 1, "dashboard_rollups": 2, "key_spend_rollups": 1}
    kept = KeySpend.objects.filter(service_key_id=7).values_list("bucket_s", "cost_usd")
    assert sorted(kept) == [(3600, 0.001), (86400, 0.001)]
    assert list(RequestRecord.objects.values_list("request_id", flat=True)) == ["r2"]
    old_rows = DashboardRollup.objects.filter(bucket_start__lt=NOW - timedelta(days=39))
    assert sorted(old_rows.values_list("bucket_s", flat=True)) == [3600, 3600, 86400, 86400]
