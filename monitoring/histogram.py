"""Latency histograms with fixed log-spaced buckets, so any window's percentiles are a
merge of per-minute histograms instead of a sort of raw rows.

Bucket i holds latencies in (MIN_MS·R^(i-1), MIN_MS·R^i]; a percentile is reported as
its bucket's geometric middle, which is within sqrt(R) - 1 = 4.9% of any value in it.
"""

import math
from collections.abc import Iterable

MIN_MS = 0.01
RATIO = 1.1
_LOG_RATIO = math.log(RATIO)

Histogram = dict[str, int]  # bucket index (as a JSON key) -> count


def bucket_of(latency_ms: float) -> int:
    if latency_ms <= MIN_MS:
        return 0
    return math.ceil(math.log(latency_ms / MIN_MS) / _LOG_RATIO - 1e-9)


def value_of(bucket: int) -> float:
    return MIN_MS * RATIO ** (bucket - 0.5) if bucket > 0 else MIN_MS


def add(histogram: Histogram, latency_ms: float, count: int = 1) -> None:
    key = str(bucket_of(latency_ms))
    histogram[key] = histogram.get(key, 0) + count


def merge(histograms: Iterable[Histogram]) -> Histogram:
    merged: Histogram = {}
    for histogram in histograms:
        for key, count in histogram.items():
            merged[key] = merged.get(key, 0) + count
    return merged


def percentile(histogram: Histogram, q: float) -> float | None:
    """The nearest-rank q-quantile (0 < q <= 1), or None for an empty histogram."""
    total = sum(histogram.values())
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for bucket in sorted(int(key) for key in histogram):
        seen += histogram[str(bucket)]
        if seen >= rank:
            return value_of(bucket)
    return None  # unreachable
