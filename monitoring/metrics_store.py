"""This process's counters, histograms and gauges, kept in files of the node's metrics
directory in prometheus-client's multiprocess format: its MultiProcessCollector merges
them at a scrape (monitoring/metrics_dir.py says whose files count and when they go).

prometheus-client's own metric objects write such files too, but each write takes its
lock, asks the kernel for the pid and packs bytes (about 1 µs; an upstream call makes 11
writes). Here a series is an index into a float64 view of the mapped file and a write is
one 8-byte store. The file is the state: nothing is lost when a process is killed, and a
process that reuses a dead one's pid goes on from its values, as prometheus-client does.

Layout (prometheus_client/mmap_dict.py): bytes 0-3 hold the size used; from byte 8,
entries of a 4-byte key length, the UTF-8 key (`mmap_key`'s JSON) padded so that the value
is 8-byte aligned, a float64 value and a float64 timestamp (always 0 here).
"""

import bisect
import math
import mmap
import os
import struct
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from prometheus_client.mmap_dict import mmap_key
from prometheus_client.utils import floatToGoString

_INITIAL_BYTES = 1 << 16
_FIRST_ENTRY = 8
_INT = struct.Struct("i")
_stores: list["Store"] = []
# Held by whoever writes (monitoring/metrics.py): `values[i] += x` is a read and a write,
# and two threads of a process may count the same series.
writing = threading.Lock()

LabelValues = tuple[str, ...]


class Store:
    """This process's file of one kind: `counter`, `histogram`, `gauge_livesum`, ..."""

    def __init__(self, directory: Path, kind: str) -> None:
        self.kind = kind
        self.directory = directory
        self.families: list[dict[LabelValues, Any]] = []  # their indexes go at a fork
        self._lock = threading.Lock()
        self._open()
        _stores.append(self)

    def index(self, key: str) -> int:
        """The series' place in `values`, added to the file if it is new."""
        with self._lock:
            found = self._indexes.get(key)
            if found is None:
                found = self._indexes[key] = self._append(key)
            return found

    def _open(self) -> None:
        self.path = self.directory / f"{self.kind}_{os.getpid()}.db"
        self._retired: list[object] = []  # earlier maps and views, kept valid
        self._map(min_bytes=_INITIAL_BYTES)
        self._used = _INT.unpack_from(self._mapped, 0)[0] or _FIRST_ENTRY
        self._indexes = dict(_entries(self._mapped, self._used))

    def _map(self, min_bytes: int) -> None:
        """Map the file, grown to `min_bytes` at least. A view handed out before stays
        valid: it maps the same pages of the same file, so its writes still count."""
        with self.path.open("a+b") as file:
            size = os.fstat(file.fileno()).st_size or _INITIAL_BYTES
            while size < min_bytes:
                size *= 2
            file.truncate(size)
            if hasattr(os, "posix_fallocate"):
                # Blocks reserved now: a full disk raises OSError here, not SIGBUS at a write.
                os.posix_fallocate(file.fileno(), 0, size)
            self._mapped = mmap.mmap(file.fileno(), size)
        self.values = memoryview(self._mapped).cast("d")

    def _append(self, key: str) -> int:
        encoded = key.encode()
        padded = encoded + b" " * (8 - (len(encoded) + 4) % 8)
        entry = _INT.pack(len(encoded)) + padded + bytes(16)
        end = self._used + len(entry)
        if end > len(self._mapped):
            self._retired.append((self._mapped, self.values))
            self._map(min_bytes=end)
        self._mapped[self._used : end] = entry
        # The size last, in one store: a reader sees the whole entry or none of it.
        self._mapped[0:4] = _INT.pack(end)
        self._used = end
        return (end - 16) // 8


def _entries(mapped: mmap.mmap, used: int) -> Iterator[tuple[str, int]]:
    """The keys already in a file and their values' indexes."""
    position = _FIRST_ENTRY
    while position < used:
        length = _INT.unpack_from(mapped, position)[0]
        key = mapped[position + 4 : position + 4 + length].decode()
        position += 4 + length + (8 - (length + 4) % 8)
        yield key, position // 8
        position += 16


class Counter(dict[LabelValues, int]):
    """A counter family: label values → the index of its series."""

    def __init__(self, store: Store, name: str, help_text: str, labels: Sequence[str] = ()):
        super().__init__()
        self.store, self.name, self.help, self.labels = store, name, help_text, tuple(labels)
        store.families.append(self)
        if not self.labels:
            self[()]  # shown (as 0) from the start

    def __missing__(self, values: LabelValues) -> int:
        key = _key(self.name, f"{self.name}_total", self.labels, values, self.help)
        index = self[values] = self.store.index(key)
        return index

    def inc(self, values: LabelValues, amount: float = 1.0) -> None:
        index = self[values]  # before `values` of the store: adding a series may remap it
        self.store.values[index] += amount


class Gauge(dict[LabelValues, int]):
    """A gauge family (how processes combine is the store's kind, e.g. gauge_livesum)."""

    def __init__(self, store: Store, name: str, help_text: str, labels: Sequence[str] = ()):
        super().__init__()
        self.store, self.name, self.help, self.labels = store, name, help_text, tuple(labels)
        store.families.append(self)

    def __missing__(self, values: LabelValues) -> int:
        key = _key(self.name, self.name, self.labels, values, self.help)
        index = self[values] = self.store.index(key)
        return index

    def set(self, values: LabelValues, value: float) -> None:
        index = self[values]
        self.store.values[index] = value


class Histogram(dict[LabelValues, tuple[int, tuple[int, ...]]]):
    """A histogram family: label values → the index of its sum and of each bucket
    (non-cumulative, as in prometheus-client's files; the collector adds them up)."""

    def __init__(
        self,
        store: Store,
        name: str,
        help_text: str,
        bounds: Sequence[float],
        labels: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.store, self.name, self.help, self.labels = store, name, help_text, tuple(labels)
        self.bounds = tuple(bounds)
        bounds_shown: list[str] = [floatToGoString(b) for b in (*bounds, math.inf)]  # type: ignore[no-untyped-call]
        self.le_values = tuple(bounds_shown)  # as prometheus-client writes them
        store.families.append(self)

    def __missing__(self, values: LabelValues) -> tuple[int, tuple[int, ...]]:
        name, labels, store = self.name, self.labels, self.store
        total = store.index(_key(name, f"{name}_sum", labels, values, self.help))
        buckets = tuple(
            store.index(_key(name, f"{name}_bucket", (*labels, "le"), (*values, le), self.help))
            for le in self.le_values
        )
        found = self[values] = (total, buckets)
        return found

    def observe(self, values: LabelValues, value: float) -> None:
        total, buckets = self[values]
        view = self.store.values
        view[total] += value
        view[buckets[bisect.bisect_left(self.bounds, value)]] += 1  # le: bound ≥ value


def _key(metric: str, sample: str, labels: LabelValues, values: LabelValues, help_text: str) -> str:
    return mmap_key(metric, sample, list(labels), list(values), help_text)


def _reopen_after_fork() -> None:
    """A forked child (Celery's prefork pool) counts in files of its own pid."""
    global writing
    writing = threading.Lock()  # another thread may have held it at the fork
    for store in _stores:
        store._open()
        for family in store.families:
            family.clear()


os.register_at_fork(after_in_child=_reopen_after_fork)
