"""In-process timings of bench/dashboard.py: monitoring.snapshot.compute for every window (the
clock frozen at the end of the synthetic history, the SQL share measured apart), and what the
record writer spends per flush on each table.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from unittest import mock

from django.db import connection


@dataclass
class WindowTiming:
    size: int
    window: str
    rollup_rows: int
    first_ms: float
    samples_ms: list[float]
    sql_ms: list[float]

    @property
    def p50_ms(self) -> float:
        return percentile(self.samples_ms, 0.50)

    @property
    def p95_ms(self) -> float:
        return percentile(self.samples_ms, 0.95)

    @property
    def max_ms(self) -> float:
        return max(self.samples_ms)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


@contextmanager
def sql_timer() -> Iterator[list[float]]:
    """Seconds spent executing SQL (in the database and the driver) inside the block."""
    spent = [0.0]

    def timed(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            spent[0] += time.perf_counter() - started

    with connection.execute_wrapper(timed):
        yield spent


def time_snapshots(size: int, anchor: datetime, repeats: int) -> list[WindowTiming]:
    from django.utils import timezone

    from monitoring import snapshot

    results = []
    with mock.patch.object(timezone, "now", return_value=anchor):
        for window, (length_s, bucket_s) in snapshot.WINDOWS.items():
            since = anchor - timedelta(seconds=length_s)
            rows = snapshot.window_rows(since, anchor, bucket_s).count()
            started = time.perf_counter()
            snapshot.compute(window)
            first_ms = (time.perf_counter() - started) * 1000
            samples, sql = [], []
            for _ in range(repeats):
                with sql_timer() as spent:
                    started = time.perf_counter()
                    snapshot.compute(window)
                    samples.append((time.perf_counter() - started) * 1000)
                sql.append(spent[0] * 1000)
            timing = WindowTiming(size, window, rows, first_ms, samples, sql)
            results.append(timing)
            print(
                f"  {window:>3}: P50 {timing.p50_ms:8.1f} ms  P95 {timing.p95_ms:8.1f} ms  "
                f"max {timing.max_ms:8.1f} ms  (first {first_ms:.1f} ms, SQL P50 "
                f"{percentile(sql, 0.5):.1f} ms, {rows:,} rollup rows)",
                flush=True,
            )
    return results


@dataclass
class FlushTiming:
    batch: int
    dashboard_ms: list[float]
    records_ms: list[float]


def time_flushes(anchor: datetime, batch: int, flushes: int) -> FlushTiming:
    """What the record writer spends per flush on each table, for `flushes` batches of
    `batch` records 0.25 s apart (its default interval), all rolled back afterwards. The
    records are copies of stored ones, moved to just after the anchor."""
    from django.db import transaction

    from beastmode.lib.rows import write_rows
    from monitoring import recorder, rollups
    from monitoring.models import RequestRecord

    fields = [f.attname for f in RequestRecord._meta.concrete_fields if not f.primary_key]
    stored = list(RequestRecord.objects.order_by("-id").values(*fields)[: batch * flushes])
    timing = FlushTiming(batch, [], [])
    with transaction.atomic():
        for n in range(flushes):
            records = stored[n * batch : (n + 1) * batch]
            for i, record in enumerate(records):
                record["created_at"] = anchor + timedelta(seconds=60 + (n + i / batch) * 0.25)
            started = time.perf_counter()
            rollups.update_from(records)
            dashboard = time.perf_counter()
            columns = recorder._defaults()  # every column with its default, as the writer
            rows = [[r.get(name, default) for name, default in columns.items()] for r in records]
            write_rows(RequestRecord, list(columns), rows)
            done = time.perf_counter()
            timing.dashboard_ms.append((dashboard - started) * 1000)
            timing.records_ms.append((done - dashboard) * 1000)
        transaction.set_rollback(True)
    return timing
