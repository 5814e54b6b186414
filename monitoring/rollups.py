"""Rollups: request records aggregated per minute and per hour as they are written.

`update_from(batch)` runs inside the transaction that inserts the batch, so a rollup
never counts a record that was not stored, nor misses one that was.
"""

import os
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from monitoring import histogram as hist
from monitoring.models import Rollup

DIMENSIONS = (
    "model", "endpoint", "service_key_name", "outcome", "cache_outcome", "cache_tier",
    "error_class", "is_warming",
)  # fmt: skip
BUCKETS_S = (60, 3600)
_DEFAULTS: dict[str, Any] = {"is_warming": False}


@dataclass
class _Sums:
    requests: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    cost_saved_usd: float = 0.0
    latency_sum_ms: float = 0.0
    histogram: hist.Histogram = field(default_factory=dict)

    def add(self, record: dict[str, Any]) -> None:
        self.requests += 1
        self.tokens_in += record.get("tokens_in", 0)
        self.tokens_out += record.get("tokens_out", 0)
        self.cost_usd += record.get("cost_usd", 0.0)
        self.cost_saved_usd += record.get("cost_saved_usd", 0.0)
        self.latency_sum_ms += record["latency_ms"]
        hist.add(self.histogram, record["latency_ms"])

    def into(self, row: Rollup) -> None:
        row.requests += self.requests
        row.tokens_in += self.tokens_in
        row.tokens_out += self.tokens_out
        row.cost_usd += self.cost_usd
        row.cost_saved_usd += self.cost_saved_usd
        row.latency_sum_ms += self.latency_sum_ms
        row.histogram = hist.merge([row.histogram, self.histogram])


def bucket_start(moment: datetime, bucket_s: int) -> datetime:
    return datetime.fromtimestamp(int(moment.timestamp()) // bucket_s * bucket_s, tz=UTC)


def update_from(records: list[dict[str, Any]]) -> None:
    sums: dict[tuple[Any, ...], _Sums] = {}
    for record in records:
        dims = tuple(record.get(name, _DEFAULTS.get(name, "")) or _DEFAULTS.get(name, "")
                     for name in DIMENSIONS)  # fmt: skip
        for bucket_s in BUCKETS_S:
            key = (bucket_s, bucket_start(record["created_at"], bucket_s), *dims)
            sums.setdefault(key, _Sums()).add(record)

    starts = {key[1] for key in sums}
    existing = {
        _key_of(row): row
        for row in Rollup.objects.filter(bucket_start__in=starts, writer=_writer())
    }
    new_rows, changed = [], []
    for key, part in sums.items():
        row = existing.get(key)
        if row is None:
            row = Rollup(
                bucket_s=key[0],
                bucket_start=key[1],
                writer=_writer(),
                **dict(zip(DIMENSIONS, key[2:], strict=True)),
            )
            new_rows.append(row)
        else:
            changed.append(row)
        part.into(row)
    Rollup.objects.bulk_create(new_rows)
    Rollup.objects.bulk_update(
        changed,
        ["requests", "tokens_in", "tokens_out", "cost_usd", "cost_saved_usd", "latency_sum_ms",
         "histogram"],
    )  # fmt: skip


def _writer() -> str:
    """This process (a forked worker is a writer of its own)."""
    return f"{socket.gethostname()}:{os.getpid()}"[:64]


def _key_of(row: Rollup) -> tuple[Any, ...]:
    return (row.bucket_s, row.bucket_start, *(getattr(row, name) for name in DIMENSIONS))
