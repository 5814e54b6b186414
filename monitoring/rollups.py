"""Rollups: request records aggregated per minute, hour and day as they are written.

`update_from(batch)` runs inside the transaction that inserts the batch, so a rollup
never counts a record that was not stored, nor misses one that was. It updates
DashboardRollup: what the dashboard shows, rows shared by all processes.
"""

import bisect
import itertools
import math
import operator
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.db import connection, transaction

from beastmode.lib.rows import write_rows
from monitoring import histogram as hist
from monitoring import labels
from monitoring.models import ERROR_OUTCOMES, REJECTED_OUTCOMES, DashboardRollup
from monitoring.records import RequestRow
from routing.models import KeySpend

DASHBOARD_BUCKETS_S = (60, 3600, 86400)
COUNTS = (
    "requests", "errors", "rejected", "looked_up", "exact_hits", "semantic_hits", "l1_hits",
    "l2_hits", "l3_hits", "cost_usd", "cost_saved_usd",
)  # fmt: skip
_TIER_COUNTS = {"L1": "l1_hits", "L2": "l2_hits", "L3": "l3_hits"}
_DASHBOARD_LOCK = 0x62656173746D  # any constant: the id of a Postgres advisory lock


@dataclass
class DashboardSums:
    counts: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    histogram: hist.Histogram = field(default_factory=dict)

    def add(self, counts: dict[str, float], latency_bucket: str) -> None:
        for name, value in counts.items():
            self.counts[name] += value
        self.histogram[latency_bucket] = self.histogram.get(latency_bucket, 0) + 1

    def add_all(self, other: "DashboardSums") -> None:
        for name, value in other.counts.items():
            self.counts[name] += value
        for bucket, count in other.histogram.items():
            self.histogram[bucket] = self.histogram.get(bucket, 0) + count

    def plus(self, stored: dict[str, Any] | None) -> tuple[Any, ...]:
        """The COUNTS and histogram of a stored row (None: no row yet) with these added."""
        stored = stored or {"histogram": []}
        return (
            *(value + stored.get(name, 0) for name, value in self.counts.items()),
            merge_dense([stored["histogram"], dense_of(self.histogram)]),
        )


def bucket_start(moment: datetime, bucket_s: int) -> datetime:
    return datetime.fromtimestamp(int(moment.timestamp()) // bucket_s * bucket_s, tz=UTC)


def dashboard_aggregate(records: list[RequestRow]) -> dict[tuple[Any, ...], DashboardSums]:
    """Sums per (bucket_s, bucket_start, is_total, model, endpoint); warming left out.

    Records are summed per (minute, model, endpoint) first, and those few groups then into
    their minute, hour, day and total rows: one addition per record instead of six (this
    runs in the record writer, under the GIL the requests being served need)."""
    per_minute: dict[tuple[int, str, str], DashboardSums] = {}
    for record in records:
        if record["is_warming"]:
            continue
        minute = int(record["created_at"].timestamp()) // 60 * 60
        key = (minute, labels.model_label(record["model"]), record["endpoint"])
        if (group := per_minute.get(key)) is None:
            group = per_minute[key] = DashboardSums()
        group.add(_counts_of(record), str(hist.bucket_of(record["latency_ms"])))
    sums: dict[tuple[Any, ...], DashboardSums] = {}
    for (minute, model, endpoint), group in per_minute.items():
        for bucket_s in DASHBOARD_BUCKETS_S:
            start = datetime.fromtimestamp(minute // bucket_s * bucket_s, tz=UTC)
            for key in ((bucket_s, start, True, "", ""), (bucket_s, start, False, model, endpoint)):
                sums.setdefault(key, DashboardSums()).add_all(group)
    return sums


def _counts_of(record: RequestRow) -> dict[str, float]:
    cache_outcome = record["cache_outcome"]
    counts: dict[str, float] = {
        "requests": 1,
        "errors": record["outcome"] in ERROR_OUTCOMES,
        "rejected": record["outcome"] in REJECTED_OUTCOMES,
        "looked_up": bool(cache_outcome),
        "exact_hits": cache_outcome == "exact",
        "semantic_hits": cache_outcome == "semantic",
        "cost_usd": record["cost_usd"],
        "cost_saved_usd": record["cost_saved_usd"],
    }
    if tier := _TIER_COUNTS.get(record["cache_tier"]):
        counts[tier] = 1
    return counts


def update_from(records: list[RequestRow]) -> None:
    """Add the records to their DashboardRollup rows and their keys' KeySpend days.
    Writers take turns: a transaction-scoped lock (Postgres; SQLite transactions are
    serialised already) held from here to the commit of the batch, a few milliseconds. It
    is the only lock writers share, so they queue but never deadlock."""
    if not records:
        return
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_DASHBOARD_LOCK])
        _add_dashboard_sums(dashboard_aggregate(records))
        _add_key_spend(records)


def _add_dashboard_sums(sums: dict[tuple[Any, ...], DashboardSums]) -> None:
    if not sums:
        return
    key_fields = ("bucket_s", "bucket_start", "is_total", "model", "endpoint")
    # bucket_s too: the unique index leads with it (without, Postgres reads it whole).
    stored = DashboardRollup.objects.filter(
        bucket_s__in=DASHBOARD_BUCKETS_S, bucket_start__in={key[1] for key in sums}
    ).values(*key_fields, *COUNTS, "histogram")
    existing = {tuple(row[name] for name in key_fields): row for row in stored}
    write_rows(
        DashboardRollup,
        (*key_fields, *COUNTS, "histogram"),
        [(*key, *part.plus(existing.get(key))) for key, part in sums.items()],
        conflict=key_fields,
        update=(*COUNTS, "histogram"),
    )


def _add_key_spend(records: list[RequestRow]) -> None:
    """Add the records' requests, tokens and cost to their keys' KeySpend minute, hour and
    day rows (under the writers' lock, as the dashboard rows)."""
    per_minute: dict[tuple[int, int], list[float]] = {}
    for record in records:
        if (key_id := record["service_key_id"]) is None:
            continue
        minute = int(record["created_at"].timestamp()) // 60 * 60
        sums = per_minute.setdefault((key_id, minute), [0, 0, 0.0])
        sums[0] += 1
        sums[1] += record["tokens_in"] + record["tokens_out"]
        sums[2] += record["cost_usd"]
    spend: dict[tuple[int, datetime, int], list[float]] = {}
    for (key_id, minute), sums in per_minute.items():
        for bucket_s in DASHBOARD_BUCKETS_S:
            start = datetime.fromtimestamp(minute // bucket_s * bucket_s, tz=UTC)
            total = spend.setdefault((bucket_s, start, key_id), [0, 0, 0.0])
            for at, value in enumerate(sums):
                total[at] += value
    if not spend:
        return
    key_fields = ("bucket_s", "bucket_start", "service_key_id")
    stored = KeySpend.objects.filter(
        bucket_s__in=DASHBOARD_BUCKETS_S,
        bucket_start__in={start for _, start, _ in spend},
        service_key_id__in={key_id for _, _, key_id in spend},
    ).values_list(*key_fields, "requests", "tokens", "cost_usd")
    for bucket_s, start, key_id, *sums in stored:
        if (total := spend.get((bucket_s, start, key_id))) is not None:
            for at, value in enumerate(sums):
                total[at] += value
    write_rows(
        KeySpend,
        (*key_fields, "requests", "tokens", "cost_usd"),
        [(*key, int(r), int(t), cost) for key, (r, t, cost) in spend.items()],
        conflict=key_fields,
        update=("requests", "tokens", "cost_usd"),
    )


def _dashboard_key(row: DashboardRollup) -> tuple[Any, ...]:
    return (row.bucket_s, row.bucket_start, row.is_total, row.model, row.endpoint)


# Dense histograms (DashboardRollup.histogram): [first bucket, its count, the next bucket's
# count, ...], [] when empty; buckets as in monitoring.histogram. A long window's snapshot
# decodes and merges hundreds of them: lists of numbers do both at C speed, where dicts
# with string keys took most of the time.
Dense = list[int]


def dense_of(histogram: hist.Histogram) -> Dense:
    if not histogram:
        return []
    first = min(int(key) for key in histogram)
    counts = [0] * (max(int(key) for key in histogram) - first + 1)
    for key, count in histogram.items():
        counts[int(key) - first] += count
    return [first, *counts]


def merge_dense(histograms: Iterable[Dense]) -> Dense:
    present = [h for h in histograms if h]
    if not present:
        return []
    first = min(h[0] for h in present)
    counts = [0] * (max(h[0] + len(h) - 1 for h in present) - first)
    for h in present:
        start = h[0] - first
        end = start + len(h) - 1
        counts[start:end] = map(operator.add, counts[start:end], itertools.islice(h, 1, None))
    return [first, *counts]


def dense_percentiles(histogram: Dense, qs: Iterable[float]) -> list[float | None]:
    """hist.percentile of each q (nearest rank, the bucket's middle); None when empty."""
    cumulative = list(itertools.accumulate(itertools.islice(histogram, 1, None)))
    total = cumulative[-1] if cumulative else 0
    if total == 0:
        return [None for _ in qs]
    return [
        hist.value_of(histogram[0] + bisect.bisect_left(cumulative, max(1, math.ceil(q * total))))
        for q in qs
    ]
