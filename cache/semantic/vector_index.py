"""The semantic index: int8 vectors of cached conversations, one index per partition.

A partition is (namespace, model, output-affecting parameters): only the conversation
text is compared by similarity, everything else must match exactly. The index holds, per
conversation, its vector as 384 int8 codes (cache/semantic/quantised.py), its key and its
expiry: no text (a lookup reads the few candidates it may serve from the cache tiers).

A partition's rows are a *base* (an HNSW graph past HNSW_MIN_ENTRIES live entries, else a
flat scan) and a *tail* of flat chunks where new rows go. Removed rows are tombstones.
A rebuild (HNSW from flat, tombstones piling up, a long tail) runs off the lock on a
snapshot and swaps the result in: the lock is held for the snapshot and for the swap, which
replays only what changed meanwhile (O(rows changed or added during the build)). The
whole index is bounded: past SEMANTIC_MAX_ENTRIES the least recently stored vectors are
dropped.

Every process loads its index from L3 at start in bulk and then follows L3 (new rows every
couple of seconds), so answers stored by other processes and by warming workers become
matchable too (cache/semantic/index_sync.py).
"""

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import faiss
import numpy as np
from django.conf import settings

from cache.semantic import quantised

faiss.omp_set_num_threads(1)  # two threads made single queries 4–15× slower here
log = logging.getLogger(__name__)

HNSW_MIN_ENTRIES = 20_000
HNSW_M = 32
HNSW_EF_SEARCH = 96
# A lookup first scouts with a smaller beam (3x cheaper): when nothing it finds comes within
# SCOUT_MARGIN of the lowest cosine that can be served, the lookup is a miss, and the full
# search would not change that. Otherwise the full search picks the candidates.
HNSW_EF_SCOUT = 32
SCOUT_MARGIN = 0.05
_SCOUT = faiss.SearchParametersHNSW()
_SCOUT.efSearch = HNSW_EF_SCOUT
TAIL_CHUNK = 65_536  # rows per flat tail chunk (25 MB): an append copies at most one chunk
TAIL_MIN = 65_536  # an HNSW partition is rebuilt when its flat tail passes this...
TAIL_SHARE = 4  # ...and a 1/TAIL_SHARE of the graph
DEAD_MIN = 1_000  # tombstones are compacted past this and a quarter of the live rows


@dataclass(frozen=True)
class Candidate:
    key: str
    expires_at: float
    cosine: float


@dataclass
class _Snapshot:
    """What a rebuild reads off the lock: nothing in it changes until the swap (the graph
    takes no adds, sealed tail chunks no rows; the row arrays only get values that the
    swap replays from the live ones)."""

    rows_n: int
    live: np.ndarray  # row numbers live at the snapshot
    base: faiss.Index | None
    base_n: int
    tail: list[faiss.Index]
    tail_starts: list[int]
    keys: list[str]
    expires: np.ndarray
    stamps: np.ndarray
    norms: np.ndarray


@dataclass
class _Built:
    snapshot: _Snapshot
    base: faiss.Index
    keys: list[str]
    rows: dict[str, int]
    expires: np.ndarray
    stamps: np.ndarray
    norms: np.ndarray
    dead: int


class PartitionIndex:
    """One partition's vectors. Not thread-safe: SemanticIndex holds a lock around every
    call but `build`, which reads only its snapshot, and `_View.search`, which reads only
    what never changes."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._keys: list[str] = []  # row -> key; "" once removed
        self._rows: dict[str, int] = {}  # key -> row, live rows only
        self._expires = np.zeros(16, dtype=np.float64)  # row -> expiry; 0 once removed
        self._stamps = np.zeros(16, dtype=np.int64)  # row -> store order (eviction)
        self._norms = np.ones(16, dtype=np.float32)  # row -> length of its code
        self._base: faiss.Index | None = None  # rows [0, _base_n)
        self._base_n = 0
        self._tail: list[faiss.Index] = []  # rows [_base_n, len(_keys)), in chunks
        self._tail_starts: list[int] = []
        self._sealed = False  # the last tail chunk is in a snapshot: the next row starts one
        self._dead = 0
        self.is_hnsw = False
        self.rebuilding = False
        self._changed: set[str] | None = None  # keys changed while a rebuild runs

    def __len__(self) -> int:
        return len(self._rows)

    # --- changes (under the caller's lock) -------------------------------------------

    def add(self, key: str, expires_at: float, code: np.ndarray, stamp: int) -> bool:
        """Index a conversation (int8 `code`); False when it was indexed already: a key
        covers the conversation, so only its expiry and store order move."""
        if key in self._rows:
            self.touch(key, expires_at, stamp)
            return False
        self.add_many([key], np.array([expires_at]), code.reshape(1, -1), stamp)
        return True

    def add_many(
        self, keys: Sequence[str], expires_at: np.ndarray, codes: np.ndarray, stamp: int
    ) -> int:
        """Index new conversations in bulk (keys already indexed only get their expiry);
        returns how many rows were added."""
        fresh, seen = [], set()
        for i, key in enumerate(keys):
            if key in self._rows:
                self.touch(key, float(expires_at[i]), stamp)
            elif key not in seen:  # (a key twice in one call: one row)
                fresh.append(i)
                seen.add(key)
        if len(fresh) < len(keys):
            keys = [keys[i] for i in fresh]
            expires_at, codes = expires_at[fresh], codes[fresh]
        first = len(self._keys)
        self._reserve(first + len(keys))
        self._expires[first : first + len(keys)] = expires_at
        self._stamps[first : first + len(keys)] = stamp
        self._norms[first : first + len(keys)] = quantised.norms(codes)
        for row, key in enumerate(keys, first):
            self._rows[key] = row
        self._keys.extend(keys)
        self._append_codes(codes, first)
        if self._changed is not None:
            self._changed.update(keys)
        return len(keys)

    def touch(self, key: str, expires_at: float, stamp: int) -> bool:
        row = self._rows.get(key)
        if row is None:
            return False
        self._expires[row] = expires_at
        self._stamps[row] = stamp
        if self._changed is not None:
            self._changed.add(key)
        return True

    def remove(self, keys: Sequence[str]) -> list[str]:
        """Remove these conversations; returns the keys that were indexed."""
        removed = []
        for key in keys:
            row = self._rows.pop(key, None)
            if row is not None:
                self._keys[row] = ""
                self._expires[row] = 0.0
                removed.append(key)
        self._dead += len(removed)
        if self._changed is not None:
            self._changed.update(removed)
        return removed

    def keys(self) -> list[str]:
        return list(self._rows)

    def expired_keys(self, now: float) -> list[str]:
        expires = self._expires[: len(self._keys)]
        return [self._keys[row] for row in np.flatnonzero((expires > 0) & (expires <= now))]

    def live_stamps(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, store order) of the live rows, for the global bound."""
        rows = np.flatnonzero(self._expires[: len(self._keys)] > 0)
        return rows, self._stamps[rows]

    def key_of(self, row: int) -> str:
        return self._keys[row]

    # --- search ---------------------------------------------------------------------

    def view(self, code: np.ndarray, k: int) -> "_View":
        """Under the lock: what a search reads, and the rows of the one tail chunk that may
        still grow (searched here). The graph and the full chunks never change (rows are
        added to the last chunk, a rebuild swaps in new objects), so `_View.search` scans
        them off the lock: a lookup never waits for another one's scan."""
        query = code.astype(np.float32).reshape(1, -1)
        want = max(1, min(len(self._keys), k + self._dead))
        frozen = list(zip(self._tail, self._tail_starts, strict=True))
        growing: list[tuple[np.ndarray, np.ndarray]] = []
        if frozen and not self._sealed and frozen[-1][0].ntotal < TAIL_CHUNK:
            growing.append(_search_flat(*frozen.pop(), query, want))
        return _View(
            query=query, want=want, k=k, base=self._base if self._base_n else None,
            is_hnsw=self.is_hnsw, frozen=frozen, found=growing, keys=self._keys,
            expires=self._expires, norms=self._norms,
        )  # fmt: skip

    def search(
        self, code: np.ndarray, k: int, now: float, floor: float | None = None
    ) -> list[Candidate]:
        """The k nearest live entries to the int8 `code` (single-threaded callers)."""
        return self.view(code, k).search(now, floor) if self._rows else []

    # --- rebuilds ---------------------------------------------------------------------

    def needs_rebuild(self) -> bool:
        if self.rebuilding:
            return False
        live, tail = len(self._rows), len(self._keys) - self._base_n
        if self._dead > max(DEAD_MIN, live // 4):
            return True
        if not self.is_hnsw:
            return live >= HNSW_MIN_ENTRIES
        return tail > max(TAIL_MIN, self._base_n // TAIL_SHARE)

    def begin_rebuild(self) -> _Snapshot:
        """Under the lock: what `build` reads. Adds go to a new tail chunk from now on."""
        self.rebuilding = True
        self._sealed = True
        self._changed = set()
        rows_n = len(self._keys)
        return _Snapshot(
            rows_n=rows_n,
            live=np.flatnonzero(self._expires[:rows_n] > 0),
            base=self._base,
            base_n=self._base_n,
            tail=list(self._tail),
            tail_starts=list(self._tail_starts),
            keys=self._keys,
            expires=self._expires,
            stamps=self._stamps,
            norms=self._norms,
        )

    def build(self, snapshot: _Snapshot) -> _Built:
        """Off the lock: a new base over the snapshot's live rows, renumbered 0..m-1."""
        codes = _codes_of_rows(snapshot, snapshot.live, self.dim)
        m = len(snapshot.live)
        base = _hnsw_of(codes) if m >= HNSW_MIN_ENTRIES else _flat_of(codes)
        del codes
        keys = [snapshot.keys[row] for row in snapshot.live.tolist()]
        # The row arrays are made here, with room for the rows added meanwhile, so that the
        # swap only writes those (at 1M rows, allocating them under the lock took 30 ms).
        capacity = max(16, 2 * m)
        expires = np.zeros(capacity, dtype=np.float64)
        stamps = np.zeros(capacity, dtype=np.int64)
        norms = np.ones(capacity, dtype=np.float32)
        expires[:m] = snapshot.expires[snapshot.live]
        stamps[:m] = snapshot.stamps[snapshot.live]
        norms[:m] = snapshot.norms[snapshot.live]
        rows: dict[str, int] = {}
        dead = 0
        for row, key in enumerate(keys):
            if key:
                rows[key] = row
            else:  # removed since the snapshot
                expires[row] = 0.0
                dead += 1
        return _Built(snapshot, base, keys, rows, expires, stamps, norms, dead)

    def finish_rebuild(self, built: _Built) -> object:
        """Under the lock: replay what changed since the snapshot onto the new rows, move
        the rows added meanwhile after them, and swap. Returns the old structures, for the
        caller to drop off the lock (freeing a million-entry dict took 30 ms)."""
        old = (self._keys, self._rows, self._base, self._expires, self._stamps, self._norms)
        snap = built.snapshot
        keys, rows, dead = built.keys, built.rows, built.dead
        m = len(keys)
        added = len(self._keys) - snap.rows_n
        expires, stamps, norms = built.expires, built.stamps, built.norms
        if m + added > len(expires):  # more rows came during the build than it had room for
            more = m + added - len(expires) + 16
            expires = np.concatenate([expires, np.zeros(more)])
            stamps = np.concatenate([stamps, np.zeros(more, dtype=np.int64)])
            norms = np.concatenate([norms, np.ones(more, dtype=np.float32)])
        for key in self._changed or ():
            new_row = rows.get(key)
            if new_row is None:
                continue  # not live at the snapshot: if live now, it is in the tail
            row = self._rows.get(key)
            if row is not None and row < snap.rows_n:  # the row of the snapshot
                expires[new_row], stamps[new_row] = self._expires[row], self._stamps[row]
            else:  # removed (maybe stored again) meanwhile
                del rows[key]
                keys[new_row], expires[new_row] = "", 0.0
                dead += 1
        # The rows added meanwhile follow, in order (C-level loops: thousands per ms).
        tail_keys = self._keys[snap.rows_n :]
        keys.extend(tail_keys)
        expires[m : m + added] = self._expires[snap.rows_n : snap.rows_n + added]
        stamps[m : m + added] = self._stamps[snap.rows_n : snap.rows_n + added]
        norms[m : m + added] = self._norms[snap.rows_n : snap.rows_n + added]
        rows.update(zip(tail_keys, range(m, m + added), strict=True))
        rows.pop("", None)
        dead += tail_keys.count("")
        fresh = len(snap.tail)
        self._tail = self._tail[fresh:]
        self._tail_starts = [start - snap.rows_n + m for start in self._tail_starts[fresh:]]
        self._keys, self._rows, self._expires, self._stamps = keys, rows, expires, stamps
        self._norms = norms
        self._base, self._base_n = built.base, m
        self.is_hnsw = m >= HNSW_MIN_ENTRIES
        self._dead = dead
        self._sealed = bool(self._tail) and self._tail[-1].ntotal >= TAIL_CHUNK
        self._changed = None
        self.rebuilding = False
        return old

    def abandon_rebuild(self) -> None:
        self._changed = None
        self.rebuilding = False

    def rebuild(self) -> None:
        """Snapshot, build and swap in one go (single-threaded callers)."""
        self.finish_rebuild(self.build(self.begin_rebuild()))

    # --- memory -----------------------------------------------------------------------

    def nbytes(self) -> int:
        """Bytes held: the vectors, the graph, the row arrays, and the Python list, dict
        and key strings (`sys.getsizeof`: without the allocator's overhead)."""
        total = self._expires.nbytes + self._stamps.nbytes + self._norms.nbytes
        total += sys.getsizeof(self._keys) + sys.getsizeof(self._rows)
        total += sum(map(sys.getsizeof, self._keys))
        for index in [*self._tail, *([self._base] if self._base is not None else [])]:
            total += _index_nbytes(index)
        return total

    # --- helpers ----------------------------------------------------------------------

    def _reserve(self, rows: int) -> None:
        if rows > len(self._expires):
            size = max(rows, 2 * len(self._expires))
            self._expires = np.concatenate([self._expires, np.zeros(size - len(self._expires))])
            self._stamps = np.concatenate(
                [self._stamps, np.zeros(size - len(self._stamps), dtype=np.int64)]
            )
            self._norms = np.concatenate(
                [self._norms, np.ones(size - len(self._norms), dtype=np.float32)]
            )

    def _append_codes(self, codes: np.ndarray, first: int) -> None:
        done = 0
        while done < len(codes):
            if not self._tail or self._sealed or self._tail[-1].ntotal >= TAIL_CHUNK:
                self._tail.append(_flat(self.dim))
                self._tail_starts.append(first + done)
                self._sealed = False
            chunk = self._tail[-1]
            take = min(len(codes) - done, TAIL_CHUNK - chunk.ntotal)
            chunk.add(np.asarray(codes[done : done + take], dtype=np.float32))
            done += take


@dataclass
class _View:
    """A search's reading of a partition (PartitionIndex.view), scanned off the lock."""

    query: np.ndarray
    want: int
    k: int
    base: faiss.Index | None
    is_hnsw: bool
    frozen: list[tuple[faiss.Index, int]]
    found: list[tuple[np.ndarray, np.ndarray]]
    keys: list[str]
    expires: np.ndarray
    norms: np.ndarray

    def search(self, now: float, floor: float | None = None) -> list[Candidate]:
        """The k nearest live entries; with a ``floor`` (the lowest cosine the caller can
        use), nearer entries may be missed when none reaches floor - SCOUT_MARGIN."""
        found = self.found + [
            _search_flat(chunk, start, self.query, self.want) for chunk, start in self.frozen
        ]
        if self.base is not None:
            if self.is_hnsw and floor is not None:
                scouted = self._search_base(_SCOUT)
                best = max((float(f[0].max()) for f in (*found, scouted) if len(f[0])), default=-1)
                if best * quantised.COSINE_PER_UNIT >= floor - SCOUT_MARGIN:
                    scouted = self._search_base(None)
                found.append(scouted)
            else:
                found.append(self._search_base(None))
        return self._live(found, now)

    def _search_base(self, params: faiss.SearchParameters | None) -> tuple[np.ndarray, np.ndarray]:
        assert self.base is not None
        dots, rows = self.base.search(self.query, min(self.want, self.base.ntotal), params=params)
        keep = rows[0] >= 0
        return dots[0][keep], rows[0][keep]

    def _live(self, found: list[tuple[np.ndarray, np.ndarray]], now: float) -> list[Candidate]:
        """The k best live rows found, by the cosine of their codes (the product of the codes
        over their lengths: their rounding leaves the codes' lengths off by ~0.2%)."""
        rows = np.concatenate([f[1] for f in found]) if found else np.empty(0, np.int64)
        if not len(rows):
            return []
        per_unit = 1.0 / float(quantised.norms(self.query)[0] or 1.0)
        cosines = np.concatenate([f[0] for f in found]) * per_unit / self.norms[rows]
        result = []
        for i in np.argsort(-cosines, kind="stable"):
            row = int(rows[i])
            key, expires_at = self.keys[row], float(self.expires[row])
            if key and expires_at > now:
                result.append(Candidate(key, expires_at, float(cosines[i])))
                if len(result) == self.k:
                    break
        return result


def _search_flat(
    chunk: faiss.Index, start: int, query: np.ndarray, want: int
) -> tuple[np.ndarray, np.ndarray]:
    dots, positions = chunk.search(query, min(want, chunk.ntotal))
    keep = positions[0] >= 0
    return dots[0][keep], positions[0][keep] + start


def _flat(dim: int) -> faiss.Index:
    return faiss.IndexScalarQuantizer(dim, quantised.FAISS_TYPE, faiss.METRIC_INNER_PRODUCT)


def _flat_of(codes: np.ndarray) -> faiss.Index:
    index = _flat(codes.shape[1])
    if len(codes):
        faiss.copy_array_to_vector(quantised.to_faiss_bytes(codes).ravel(), index.codes)
        index.ntotal = len(codes)
    return index


def _hnsw_of(codes: np.ndarray) -> faiss.Index:
    index = faiss.IndexHNSWSQ(
        codes.shape[1], quantised.FAISS_TYPE, HNSW_M, faiss.METRIC_INNER_PRODUCT
    )
    index.hnsw.efSearch = HNSW_EF_SEARCH
    for start in range(0, len(codes), 16_384):
        index.add(codes[start : start + 16_384].astype(np.float32))
    return index


def _storage(index: faiss.Index) -> faiss.Index:
    if isinstance(index, faiss.IndexHNSW):
        return faiss.downcast_index(index.storage)
    return index


def _codes_of(index: faiss.Index) -> np.ndarray:
    """All int8 codes of a flat or HNSW index (a copy)."""
    raw = faiss.vector_to_array(_storage(index).codes)
    return quantised.from_faiss_bytes(raw.reshape(-1, index.d))


def _codes_of_rows(snapshot: _Snapshot, rows: np.ndarray, dim: int) -> np.ndarray:
    parts = []
    in_base = rows[rows < snapshot.base_n]
    if len(in_base):
        assert snapshot.base is not None
        parts.append(_codes_of(snapshot.base)[in_base])
    for chunk, start in zip(snapshot.tail, snapshot.tail_starts, strict=True):
        mine = rows[(rows >= start) & (rows < start + chunk.ntotal)]
        if len(mine):
            parts.append(_codes_of(chunk)[mine - start])
    if not parts:
        return np.empty((0, dim), dtype=np.int8)
    return np.concatenate(parts)


def _index_nbytes(index: faiss.Index) -> int:
    total = _storage(index).codes.size()
    if isinstance(index, faiss.IndexHNSW):
        hnsw = index.hnsw
        total += hnsw.neighbors.size() * 4 + hnsw.offsets.size() * 8 + hnsw.levels.size() * 4
    return int(total)


class SemanticIndex:
    """All partitions of this process, bounded in total size. Thread-safe; rebuilds run
    in one background thread (``background=False``: only when `rebuild_pending` is
    called, for tests and benches)."""

    def __init__(self, dim: int, max_entries: int, *, background: bool = True) -> None:
        self.dim, self.max_entries = dim, max_entries
        self._partitions: dict[str, PartitionIndex] = {}
        self._owners: dict[str, tuple[str, str]] = {}  # partition → (namespace, model)
        self._count = 0
        self._stamp = 0
        self._lock = threading.Lock()
        self._background = background
        self._pending: set[str] = set()
        self._wake = threading.Event()
        self._builder: threading.Thread | None = None
        self._held = 0  # rebuilds wait while > 0 (a bulk load is running)
        self.longest_swap_ms = 0.0  # the longest lock hold of a rebuild's snapshot or swap

    def __len__(self) -> int:
        return self._count

    def add(
        self,
        partition: str,
        key: str,
        expires_at: float,
        vector: np.ndarray,
        owner: tuple[str, str] | None = None,
    ) -> None:
        """Index a conversation; `owner` is its (namespace, model), which purges of a
        namespace or a model find it by."""
        self.add_codes(partition, [key], np.array([expires_at]), quantised.codes(vector), owner)

    def add_codes(
        self,
        partition: str,
        keys: Sequence[str],
        expires_at: np.ndarray,
        codes: np.ndarray,
        owner: tuple[str, str] | None = None,
    ) -> None:
        """Index many conversations of one partition from their codes (int8, or float32
        whole numbers: quantised.float_codes)."""
        with self._lock:
            index = self._partitions.get(partition)
            if index is None:
                index = self._partitions[partition] = PartitionIndex(self.dim)
            if owner is not None:
                self._owners[partition] = owner
            self._stamp += 1
            self._count += index.add_many(
                keys, expires_at, codes.reshape(-1, self.dim), self._stamp
            )
            if self._count > self.max_entries:
                self._evict(self._count - self.max_entries)
            self._maybe_rebuild(partition, index)

    def touch(self, partition: str, key: str, expires_at: float) -> bool:
        """Set the expiry of an indexed conversation (stored again: it moves to the back
        of the eviction order); False when it is not indexed."""
        with self._lock:
            index = self._partitions.get(partition)
            self._stamp += 1
            return index is not None and index.touch(key, expires_at, self._stamp)

    def search(
        self, partition: str, vector: np.ndarray, k: int = 4, floor: float | None = None
    ) -> list[Candidate]:
        code = quantised.codes(vector)
        with self._lock:
            index = self._partitions.get(partition)
            if index is None or not len(index):
                return []
            view = index.view(code, k)
        return view.search(time.time(), floor)

    def remove(self, keys: list[str]) -> None:
        with self._lock:
            for name, index in self._partitions.items():
                self._count -= len(index.remove(keys))
                self._maybe_rebuild(name, index)

    def purge(self, *, model: str = "", namespace: str = "", key: str = "") -> None:
        """Remove what a purge covers: the conversations of a model, a namespace or one key
        (or where they meet)."""
        with self._lock:
            for name, index in self._partitions.items():
                if model or namespace:
                    owner_namespace, owner_model = self._owners.get(name, ("", ""))
                    if (model and model != owner_model) or (
                        namespace and namespace != owner_namespace
                    ):
                        continue
                self._count -= len(index.remove([key] if key else index.keys()))
                self._maybe_rebuild(name, index)
            self._drop_empty()

    def drop_expired(self) -> int:
        now = time.time()
        dropped = 0
        with self._lock:
            for name, index in self._partitions.items():
                expired = index.remove(index.expired_keys(now))
                dropped += len(expired)
                self._maybe_rebuild(name, index)
            self._count -= dropped
            self._drop_empty()
        return dropped

    def nbytes(self) -> int:
        with self._lock:
            return sum(index.nbytes() for index in self._partitions.values())

    # --- rebuilds ---------------------------------------------------------------------

    def rebuild(self, partition: str, on_building: Callable[[], None] | None = None) -> bool:
        """Rebuild a partition: snapshot and swap under the lock, the build off it
        (`on_building` is called there, between the two). False when there is nothing to
        rebuild or a rebuild of it is running."""
        with self._lock:
            started = time.perf_counter()
            index = self._partitions.get(partition)
            if index is None or index.rebuilding:
                return False
            snapshot = index.begin_rebuild()
            self._note_hold(started)
        try:
            if on_building is not None:
                on_building()
            built = index.build(snapshot)
        except BaseException:
            with self._lock:
                index.abandon_rebuild()
            raise
        with self._lock:
            started = time.perf_counter()
            old = index.finish_rebuild(built)
            self._note_hold(started)
        del old, built  # freed here, off the lock
        return True

    @contextlib.contextmanager
    def rebuilds_held(self) -> Iterator[None]:
        """No rebuild starts inside this block (a bulk load: one rebuild after it, not one
        at HNSW_MIN_ENTRIES with the rest of the load to replay at the swap)."""
        with self._lock:
            self._held += 1
        try:
            yield
        finally:
            with self._lock:
                self._held -= 1
            self._wake.set()

    def rebuild_pending(self) -> int:
        """Run the rebuilds that changes asked for, here; returns how many ran."""
        ran = 0
        while True:
            with self._lock:
                if not self._pending or self._held:
                    return ran
                partition = self._pending.pop()
            ran += self.rebuild(partition)

    def is_rebuilding(self) -> bool:
        with self._lock:
            return bool(self._pending) or any(i.rebuilding for i in self._partitions.values())

    def _note_hold(self, started: float) -> None:
        self.longest_swap_ms = max(self.longest_swap_ms, (time.perf_counter() - started) * 1e3)

    def _maybe_rebuild(self, partition: str, index: PartitionIndex) -> None:
        if partition in self._pending or not index.needs_rebuild():
            return
        self._pending.add(partition)
        if self._background:
            if self._builder is None:
                self._builder = threading.Thread(
                    target=self._build_forever, name="semantic-index-builder", daemon=True
                )
                self._builder.start()
            self._wake.set()

    def _build_forever(self) -> None:
        # OpenMP's thread count is per thread: a new thread starts with one per core, and a
        # build on both cores of a node competes with every lookup of its processes.
        faiss.omp_set_num_threads(1)
        while True:
            self._wake.wait()
            self._wake.clear()
            try:
                self.rebuild_pending()
            except Exception:
                log.warning("semantic index rebuild failed", exc_info=True)

    # --- helpers ----------------------------------------------------------------------

    def _evict(self, excess: int) -> None:
        """Drop the least recently stored live vectors, at least `excess` of them (a
        thousandth of the bound at a time, so that the scan is paid rarely)."""
        names = list(self._partitions)
        found = [self._partitions[name].live_stamps() for name in names]
        stamps = np.concatenate([s for _, s in found])
        owner = np.concatenate([np.full(len(r), i) for i, (r, _) in enumerate(found)])
        rows = np.concatenate([r for r, _ in found])
        count = min(len(stamps), max(excess, self.max_entries // 1000))
        oldest = np.argpartition(stamps, count - 1)[:count] if count < len(stamps) else None
        chosen = np.arange(len(stamps)) if oldest is None else oldest
        for i, name in enumerate(names):
            mine = rows[chosen[owner[chosen] == i]]
            if len(mine):
                index = self._partitions[name]
                self._count -= len(index.remove([index.key_of(int(row)) for row in mine]))
                self._maybe_rebuild(name, index)

    def _drop_empty(self) -> None:
        self._partitions = {
            p: i
            for p, i in self._partitions.items()
            if len(i) or p in self._pending or i.rebuilding
        }
        self._owners = {p: o for p, o in self._owners.items() if p in self._partitions}


_index: SemanticIndex | None = None
_index_lock = threading.Lock()


def index() -> SemanticIndex:
    global _index
    with _index_lock:
        if _index is None:
            _index = SemanticIndex(dim=384, max_entries=settings.SEMANTIC_MAX_ENTRIES)
        return _index


def to_bytes(vector: np.ndarray) -> bytes:
    return vector.astype(np.float32).tobytes()


def from_bytes(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype=np.float32)
