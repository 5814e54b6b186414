"""The dashboard's rollups: every window's snapshot equals what the raw records say, long
windows read days instead of hours, concurrent writers lose nothing, and the history
that was in Rollup (a table since removed) is carried over by migration 0004."""

import importlib
import random
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import pytest
from django.conf import settings
from django.db import connection, connections
from django.db.migrations.loader import MigrationLoader
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from monitoring import histogram, recorder, rollups, snapshot
from monitoring.models import ERROR_OUTCOMES, REJECTED_OUTCOMES, DashboardRollup, RequestRecord
from monitoring.records import RequestRow, request_row
from routing import registry
from tests.personas import make_endpoint, make_model

# Not on a bucket boundary, so the 7d window starts and ends inside a day and an hour.
NOW = datetime(2026, 3, 10, 13, 37, 20, 250000, tzinfo=UTC)
ROUTES = {"alpha": ("alpha-a", "alpha-b"), "beta": ("beta-a",)}


def traffic(count: int, seed: int = 3) -> list[RequestRow]:
    """Records over the 8 days before NOW: answers, cache hits in every tier, errors,
    rejections, warming; the request-record fields gateway/exchange.py fills in."""
    rng = random.Random(seed)
    records = []
    for n in range(count):
        model = rng.choice([*ROUTES, ""])
        outcome = rng.choices(
            ["success", "upstream_error", "internal_error", "client_error", "auth_error"],
            weights=[80, 8, 2, 6, 4],
        )[0]
        cache = rng.choice(["miss", "exact", "semantic", "shadow"]) if outcome == "success" else ""
        hit = cache in ("exact", "semantic")
        served = outcome == "success" and not hit and model != ""
        span_s = 3600 if n % 5 == 0 else 8 * 86400  # the short windows get something too
        records.append(request_row(
            request_id=f"dr{seed}-{n}",
            created_at=NOW - timedelta(seconds=rng.uniform(0, span_s)),
            path="/v1/chat/completions", model=model,
            endpoint=rng.choice(ROUTES[model]) if served else "",
            outcome=outcome, status_code=200 if outcome == "success" else 502,
            latency_ms=rng.lognormvariate(1 if hit else 5, 1.0),
            cost_usd=rng.uniform(0, 0.01) if served else 0.0,
            cost_saved_usd=rng.uniform(0, 0.01) if hit else 0.0,
            cache_outcome=cache, cache_tier=rng.choice(["L1", "L2", "L3"]) if hit else "",
            is_warming=served and rng.random() < 0.05,
        ))  # fmt: skip
    return records


def write(records: list[RequestRow]) -> None:
    recorder._pending.extend(map(recorder._pack, records))
    recorder.flush()


def histogram_of(records: list[RequestRow]) -> histogram.Histogram:
    result: histogram.Histogram = {}
    for record in records:
        histogram.add(result, record["latency_ms"])
    return result


def p(records: list[RequestRow], q: float) -> float | None:
    value = histogram.percentile(histogram_of(records), q)
    return round(value, 3) if value is not None else None


@pytest.fixture
def quiet(transactional_db: None) -> None:
    """No record or rollup but the test's own: the gateways of earlier tests may still be
    writing their last ones into this database."""
    wait_for_late_records()
    RequestRecord.objects.all().delete()
    DashboardRollup.objects.all().delete()


@pytest.fixture
def routed(quiet: None) -> None:
    """The models and endpoints of ROUTES, known to this process's registry."""
    for model, names in ROUTES.items():
        make_model(model, [make_endpoint(name, "http://127.0.0.1:9/v1") for name in names])
    registry.reload()


@pytest.mark.embedded
def test_every_window_shows_what_the_raw_records_say(routed: None) -> None:
    records = traffic(2500)
    write(records)
    for window in snapshot.WINDOWS:
        assert_shows(window, records)


@pytest.mark.embedded
def test_models_that_are_not_configured_are_one_row_named_unknown(routed: None) -> None:
    records = traffic(300)
    for n, record in enumerate(records[:200]):
        record["model"] = f"made-up-{n}"  # a client's random names
    write(records)

    with mock.patch.object(timezone, "now", return_value=NOW):
        by_model = {row["model"]: row for row in snapshot.compute("7d")["by_model"]}

    assert set(by_model) <= {"alpha", "beta", "unknown"}
    assert by_model["unknown"]["requests"] >= 150  # (those in the 7-day window)
    assert RequestRecord.objects.filter(model__startswith="made-up-").count() == 200


def assert_shows(window: str, records: list[RequestRow]) -> None:
    length_s, bucket_s = snapshot.WINDOWS[window]
    since = NOW - timedelta(seconds=length_s)
    shown = [
        r for r in records
        if not r["is_warming"] and rollups.bucket_start(r["created_at"], bucket_s) >= since
    ]  # fmt: skip
    with mock.patch.object(timezone, "now", return_value=NOW):
        result = snapshot.compute(window)

    kpis = result["kpis"]
    assert kpis["requests"] == len(shown) > 0
    assert kpis["errors"] == sum(r["outcome"] in ERROR_OUTCOMES for r in shown)
    assert kpis["rejected"] == sum(r["outcome"] in REJECTED_OUTCOMES for r in shown)
    assert kpis["exact_hits"] == sum(r["cache_outcome"] == "exact" for r in shown)
    assert kpis["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in shown), abs=1e-6)
    assert (kpis["p50_ms"], kpis["p95_ms"], kpis["p99_ms"]) == (
        p(shown, 0.5), p(shown, 0.95), p(shown, 0.99),
    )  # fmt: skip
    assert result["tiers"] == {
        tier: sum(r["cache_tier"] == tier for r in shown) for tier in ("L1", "L2", "L3")
    }
    models = {row["model"]: row for row in result["by_model"]}
    endpoints = {row["endpoint"]: row for row in result["endpoints"]}
    for model in ROUTES:
        mine = [r for r in shown if r["model"] == model]
        assert (models[model]["requests"], models[model]["p95_ms"]) == (len(mine), p(mine, 0.95))
        for endpoint in ROUTES[model]:
            theirs = [r for r in shown if r["endpoint"] == endpoint]
            row = endpoints[endpoint]
            assert (row["requests"], row["p95_ms"]) == (len(theirs), p(theirs, 0.95))
    assert sum(result["series"]["requests"]) == len(shown)
    last = [r for r in shown if r["created_at"] >= rollups.bucket_start(NOW, bucket_s)]
    assert (result["series"]["requests"][-1], result["series"]["p95_ms"][-1]) == (
        len(last), p(last, 0.95),
    )  # fmt: skip


@pytest.mark.embedded
def test_the_7d_window_reads_each_pair_by_the_day_except_at_its_edges(routed: None) -> None:
    write(traffic(1500))
    rows = snapshot.window_rows(NOW - timedelta(days=7), NOW, 3600)
    pairs = rows.filter(is_total=False)
    days = pairs.filter(bucket_s=86400).values_list("bucket_start", flat=True).distinct()
    assert len(days) == 6  # Mar 4 .. Mar 9; Mar 3 and 10 are partly outside the window
    assert pairs.filter(bucket_s=3600).values("bucket_start").distinct().count() <= 25
    assert rows.filter(is_total=True, bucket_s=3600).count() == 7 * 24


def test_recent_errors_are_read_from_the_partial_index(routed: None) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("a Postgres plan")
    write(traffic(500))
    with CaptureQueriesContext(connection) as captured:
        snapshot.compute("7d")
    (sql,) = [q["sql"] for q in captured if "monitoring_requestrecord" in q["sql"]]
    with connection.cursor() as cursor:
        # Without a sequential scan to fall back on, only a matching partial index serves.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        cursor.execute(f"EXPLAIN {sql}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "monitoring_recent_errors" in plan, plan


def test_writers_in_several_processes_lose_no_count(quiet: None) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("SQLite runs one write transaction at a time anyway")
    records = traffic(1200, seed=5)
    barrier = threading.Barrier(4)

    def writer(part: list[RequestRow]) -> None:
        barrier.wait()
        try:
            for start in range(0, len(part), 50):  # many small flushes of the same buckets
                recorder._write([recorder._pack(r) for r in part[start : start + 50]])
        finally:
            connections.close_all()

    # Threads standing in for processes, each with its own connection, all on the same rows.
    threads = [threading.Thread(target=writer, args=(records[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counted = [r for r in records if not r["is_warming"]]
    for bucket_s in rollups.DASHBOARD_BUCKETS_S:
        totals = DashboardRollup.objects.filter(bucket_s=bucket_s, is_total=True)
        assert sum(row.requests for row in totals) == len(counted)
        merged = rollups.merge_dense(row.histogram for row in totals)
        assert sum(merged[1:]) == len(counted)


@pytest.mark.embedded
def test_the_migration_carries_rollup_history_over(quiet: None) -> None:
    """Migration 0004 filled DashboardRollup from the Rollup rows written until then (0005
    dropped the table): from the Rollup rows of some records it makes what the record
    writer now writes for them."""
    records = traffic(1000, seed=9)
    write(records)
    written = {rollups._dashboard_key(row): row for row in DashboardRollup.objects.all()}
    DashboardRollup.objects.all().delete()
    state = MigrationLoader(connection).project_state(("monitoring", "0004_dashboard_rollup"))
    rollup = state.apps.get_model("monitoring", "Rollup")
    with connection.schema_editor() as editor:
        editor.create_model(rollup)
    try:
        rollup.objects.bulk_create(rollup(**row) for row in rollup_rows(records))
        migration = importlib.import_module("monitoring.migrations.0004_dashboard_rollup")
        migration.fill_from_rollups(state.apps, None)
    finally:
        with connection.schema_editor() as editor:
            editor.delete_model(rollup)

    filled = {rollups._dashboard_key(row): row for row in DashboardRollup.objects.all()}
    assert not set(filled) ^ set(written)  # (a set: pytest's diff of 1,000 keys takes minutes)
    for key, row in filled.items():
        for name in (*rollups.COUNTS, "histogram"):
            assert getattr(row, name) == pytest.approx(getattr(written[key], name)), (key, name)


def wait_for_late_records() -> None:
    """The gateways of earlier tests may still be writing their last records (and their
    rollups) into this database: wait until no more arrive."""
    seen = -1
    while (count := RequestRecord.objects.count()) != seen:
        seen = count
        time.sleep(settings.RECORD_FLUSH_INTERVAL_S + 0.5)


def rollup_rows(records: list[RequestRow]) -> list[dict[str, Any]]:
    """The Rollup rows (minute and hour) the record writer wrote for these records before
    migration 0005, by two writer processes."""
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for n, record in enumerate(records):
        names = ("model", "endpoint", "outcome", "cache_outcome", "cache_tier", "is_warming")
        dimensions = {name: record[name] for name in names}
        for bucket_s in (60, 3600):
            start = rollups.bucket_start(record["created_at"], bucket_s)
            key = (f"test:{n % 2}", bucket_s, start, *dimensions.values())
            row = rows.setdefault(key, {
                "writer": key[0], "bucket_s": bucket_s, "bucket_start": start, **dimensions,
                "service_key_name": "", "error_class": "", "requests": 0, "cost_usd": 0.0,
                "cost_saved_usd": 0.0, "latency_sum_ms": 0.0, "histogram": {},
            })  # fmt: skip
            row["requests"] += 1
            row["cost_usd"] += record["cost_usd"]
            row["cost_saved_usd"] += record["cost_saved_usd"]
            row["latency_sum_ms"] += record["latency_ms"]
            histogram.add(row["histogram"], record["latency_ms"])
    return list(rows.values())


def test_dense_histograms_give_the_histogram_modules_percentiles() -> None:
    rng = random.Random(11)
    values = [rng.lognormvariate(3, 1.5) for _ in range(5000)]
    parts = [histogram_of([{"latency_ms": v} for v in values[i : i + 700]])
             for i in range(0, len(values), 700)]  # fmt: skip
    dense = rollups.merge_dense(rollups.dense_of(part) for part in parts)
    merged = histogram.merge(parts)
    qs = (0.001, 0.5, 0.95, 0.99, 1.0)
    assert rollups.dense_percentiles(dense, qs) == [histogram.percentile(merged, q) for q in qs]
    assert rollups.dense_of(merged) == dense
    assert rollups.dense_percentiles(rollups.merge_dense([[], []]), (0.5,)) == [None]


def failure(n: int, seconds_ago: float, **fields: Any) -> RequestRow:
    """A request of model alpha, NOW minus `seconds_ago`: an answer unless fields say else."""
    return request_row(**{
        "request_id": f"f{n}", "created_at": NOW - timedelta(seconds=seconds_ago),
        "path": "/v1/chat/completions", "model": "alpha", "endpoint": "alpha-a",
        "outcome": "success", "status_code": 200, "latency_ms": 20.0, **fields,
    })  # fmt: skip


UPSTREAM_500 = {"outcome": "upstream_error", "status_code": 502, "endpoint": "",
                "error_class": "upstream_server_error",
                "error_message": "alpha-a said 500"}  # fmt: skip
CIRCUIT_OPEN = {"outcome": "upstream_error", "status_code": 503, "endpoint": "",
                "error_class": "circuit_open", "error_message": "cooling down"}  # fmt: skip
BAD_REQUEST = {"outcome": "client_error", "status_code": 400, "endpoint": "",
               "error_class": "invalid_request"}  # fmt: skip


def compute_at_now(window: str) -> snapshot.DashboardSnapshot:
    with mock.patch.object(timezone, "now", return_value=NOW):
        return snapshot.compute(window)


@pytest.mark.embedded
def test_failed_and_rejected_requests_are_counted_apart(routed: None) -> None:
    write([failure(n, 60 + n) for n in range(16)]
          + [failure(100 + n, 70, **UPSTREAM_500) for n in range(3)]
          + [failure(200, 80, **BAD_REQUEST)])  # fmt: skip
    result = compute_at_now("1h")
    kpis = result["kpis"]
    assert (kpis["errors"], kpis["error_rate"]) == (3, 0.15)
    assert (kpis["rejected"], kpis["rejected_rate"]) == (1, 0.05)
    assert (sum(result["series"]["errors"]), sum(result["series"]["rejected"])) == (3, 1)


@pytest.mark.embedded
def test_recent_errors_keep_the_upstream_error_behind_an_open_circuit(routed: None) -> None:
    # alpha fails three times, its circuit opens, and then more fast failures follow than
    # the recent errors read: the upstream error is still on the page, pinned as the cause.
    write([failure(n, 900 + n, **UPSTREAM_500) for n in range(3)]
          + [failure(10 + n, 800 - n, **CIRCUIT_OPEN)
             for n in range(snapshot.RECENT_ERRORS_READ + 100)])  # fmt: skip
    errors = compute_at_now("1h")["recent_errors"]
    kinds = {(e["error_class"], e["cause_of"]): e for e in errors}
    assert set(kinds) == {("circuit_open", ""), ("upstream_server_error", "circuit_open")}
    assert kinds["circuit_open", ""]["count"] == snapshot.RECENT_ERRORS_READ
    cause = kinds["upstream_server_error", "circuit_open"]
    assert (cause["request_id"], cause["message"]) == ("f0", "alpha-a said 500")
    assert [e["error_class"] for e in errors] == ["circuit_open", "upstream_server_error"]


@pytest.mark.embedded
def test_recent_errors_are_one_row_per_kind_with_its_count_and_latest(routed: None) -> None:
    timeout = {**UPSTREAM_500, "error_class": "first_byte_timeout", "status_code": 504}
    write([failure(n, 300 - n, **UPSTREAM_500) for n in range(30)]
          + [failure(100 + n, 200 + n, **timeout) for n in range(5)]
          + [failure(200, 100, **UPSTREAM_500, model="beta")])  # fmt: skip
    errors = compute_at_now("1h")["recent_errors"]
    assert [(e["error_class"], e["model"], e["count"]) for e in errors] == [
        ("upstream_server_error", "beta", 1),
        ("first_byte_timeout", "alpha", 5),
        ("upstream_server_error", "alpha", 30),
    ]
    latest = errors[2]
    assert latest["request_id"] == "f29"
    assert latest["first_at"] == (NOW - timedelta(seconds=300)).isoformat()
    assert len(errors) <= snapshot.MAX_ERROR_KINDS


@pytest.mark.embedded
def test_the_series_starts_at_the_first_traffic_when_it_is_younger_than_the_window(
    routed: None,
) -> None:
    write([failure(n, 60 * n + 5) for n in range(5)])  # five minutes of traffic, no more
    series = compute_at_now("1h")["series"]
    first = rollups.bucket_start(NOW - timedelta(seconds=4 * 60 + 5), 60)
    assert series["t"][0] == first.isoformat()
    assert len(series["t"]) == 5 and sum(series["requests"]) == 5
    assert all(p is not None for p in series["p95_ms"])  # (no empty bucket between them)


@pytest.mark.embedded
def test_the_series_spans_the_whole_window_when_there_was_traffic_before_it(
    routed: None,
) -> None:
    write([failure(1, 2 * 3600), failure(2, 5 * 60)])  # yesterday's gateway, say
    series = compute_at_now("1h")["series"]
    assert len(series["t"]) == 60 and sum(series["requests"]) == 1


@pytest.mark.embedded
def test_old_rollups_of_unconfigured_model_names_count_as_unknown(routed: None) -> None:
    # Rows written before model labels were bounded hold the client's names.
    write([failure(1, 60)])
    DashboardRollup.objects.filter(is_total=False).update(model="made-up-model")
    by_model = {row["model"] for row in compute_at_now("1h")["by_model"]}
    assert by_model == {"unknown"}


@pytest.mark.embedded
def test_costs_keep_their_significant_digits(routed: None) -> None:
    write([failure(1, 60, cost_usd=0.000123456, cost_saved_usd=0.0000004)])
    kpis = compute_at_now("1h")["kpis"]
    assert (kpis["cost_usd"], kpis["cost_saved_usd"]) == (0.000123456, 4e-07)
