"""The semantic index: FAISS vectors of cached conversations, one index per partition.

A partition is (namespace, model, output-affecting parameters): only the conversation
text is compared by similarity, everything else must match exactly. Small partitions
use an exact flat index (entries can be removed); a partition past HNSW_MIN_ENTRIES
moves to HNSW (fast at a million entries, but no removal: removed ids become tombstones,
and the partition is rebuilt when they pile up). The whole index is bounded: past
SEMANTIC_MAX_ENTRIES the oldest vectors are dropped.

Every process rebuilds its index from L3 at start and then follows L3 (new rows every
couple of seconds), so answers stored by other processes and by warming workers become
matchable too.
"""

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import faiss
import numpy as np
from django.conf import settings

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


@dataclass(frozen=True)
class Candidate:
    key: str
    text: str
    expires_at: float
    cosine: float


# What a search needs besides the vector, which only FAISS keeps (no second copy):
# (key, text, expires_at). A plain tuple of atomic values, which the cyclic garbage
# collector stops tracking; an object per entry would make each full collection walk a
# million objects at a million entries (a latency spike for every request in flight).
_Stored = tuple[str, str, float]


class PartitionIndex:
    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._by_id: dict[int, _Stored] = {}
        self._id_by_key: dict[str, int] = {}
        self._next_id = 0
        self._tombstones: set[int] = set()
        self._index: faiss.Index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.is_hnsw = False

    def __len__(self) -> int:
        return len(self._by_id)

    def add(self, key: str, text: str, expires_at: float, vector: np.ndarray) -> bool:
        """Index a conversation; False when it was indexed already with the same text (an
        answer stored again, or this process's own write read back from L3): then only
        its expiry moves, and no vector is replaced (each replacement in an HNSW index is
        a tombstone, and tombstones bring on a rebuild)."""
        vector_id = self._id_by_key.get(key)
        if vector_id is not None and self._by_id[vector_id][1] == text:
            self.touch(key, expires_at)
            return False
        self.remove([key])
        vector_id = self._next_id
        self._next_id += 1
        self._by_id[vector_id] = (key, text, expires_at)
        self._id_by_key[key] = vector_id
        self._index.add_with_ids(vector.reshape(1, -1), np.array([vector_id], dtype=np.int64))
        if not self.is_hnsw and len(self._by_id) >= HNSW_MIN_ENTRIES:
            self._rebuild(hnsw=True)
        return True

    def touch(self, key: str, expires_at: float) -> bool:
        vector_id = self._id_by_key.get(key)
        if vector_id is None:
            return False
        self._by_id[vector_id] = (key, self._by_id[vector_id][1], expires_at)
        return True

    def keys(self) -> list[str]:
        return list(self._id_by_key)

    def remove(self, keys: list[str]) -> list[str]:
        """Remove these conversations; returns the keys that were indexed."""
        removed = [key for key in keys if key in self._id_by_key]
        ids = [self._id_by_key.pop(key) for key in removed]
        if not ids:
            return removed
        for vector_id in ids:
            del self._by_id[vector_id]
        if self.is_hnsw:
            self._tombstones.update(ids)
            if len(self._tombstones) > len(self._by_id) / 4:
                self._rebuild(hnsw=len(self._by_id) >= HNSW_MIN_ENTRIES)
        else:
            self._index.remove_ids(np.array(ids, dtype=np.int64))
        return removed

    def search(
        self, vector: np.ndarray, k: int, now: float, floor: float | None = None
    ) -> list[Candidate]:
        """The k nearest live entries; with a ``floor`` (the lowest cosine the caller can
        use), nearer entries may be missed when none reaches floor - SCOUT_MARGIN."""
        if not self._by_id:
            return []
        want = max(1, min(len(self._by_id), k + len(self._tombstones)))
        query = vector.reshape(1, -1)
        if self.is_hnsw and floor is not None:
            cosines, ids = self._index.search(query, want, params=_SCOUT)
            if cosines[0][0] < floor - SCOUT_MARGIN:
                return self._live(cosines[0], ids[0], k, now)
        cosines, ids = self._index.search(query, want)
        return self._live(cosines[0], ids[0], k, now)

    def _live(self, cosines: np.ndarray, ids: np.ndarray, k: int, now: float) -> list[Candidate]:
        found = []
        for cosine, vector_id in zip(cosines, ids, strict=True):
            stored = self._by_id.get(int(vector_id))
            if stored is not None and stored[2] > now:
                found.append(Candidate(*stored, float(cosine)))
        return found[:k]

    def drop_expired(self, now: float) -> list[str]:
        """Remove the expired conversations; returns their keys."""
        return self.remove(
            [key for key, _, expires_at in self._by_id.values() if expires_at <= now]
        )

    def _rebuild(self, *, hnsw: bool) -> None:
        ids = np.fromiter(self._by_id, dtype=np.int64, count=len(self._by_id))
        vectors = self._index.reconstruct_batch(ids) if len(ids) else None
        if hnsw:
            inner = faiss.IndexHNSWFlat(self.dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efSearch = HNSW_EF_SEARCH
            self._index = faiss.IndexIDMap2(inner)
        else:
            self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        self.is_hnsw = hnsw
        self._tombstones.clear()
        if vectors is not None:
            self._index.add_with_ids(vectors, ids)


class SemanticIndex:
    """All partitions of this process, bounded in total size. Thread-safe.

    `_order` holds exactly the indexed (partition, key) pairs, least recently stored
    first: every removal (expiry, purge, replacement, eviction) takes its pair out, so
    the bound evicts the stalest live vectors and counts each one once."""

    def __init__(self, dim: int, max_entries: int) -> None:
        self.dim, self.max_entries = dim, max_entries
        self._partitions: dict[str, PartitionIndex] = {}
        self._owners: dict[str, tuple[str, str]] = {}  # partition → (namespace, model)
        self._order: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return sum(len(p) for p in self._partitions.values())

    def add(
        self,
        partition: str,
        key: str,
        text: str,
        expires_at: float,
        vector: np.ndarray,
        owner: tuple[str, str] | None = None,
    ) -> None:
        """Index a conversation; `owner` is its (namespace, model), which purges of a
        namespace or a model find it by."""
        with self._lock:
            index = self._partitions.get(partition)
            if index is None:
                index = self._partitions[partition] = PartitionIndex(self.dim)
            if owner is not None:
                self._owners[partition] = owner
            index.add(key, text, expires_at, vector.astype(np.float32, copy=False))
            self._order[(partition, key)] = None
            self._order.move_to_end((partition, key))
            while len(self._order) > self.max_entries:
                (old_partition, old_key), _ = self._order.popitem(last=False)
                self._partitions[old_partition].remove([old_key])

    def touch(self, partition: str, key: str, expires_at: float) -> bool:
        """Set the expiry of an indexed conversation (stored again: it moves to the back
        of the eviction order); False when it is not indexed."""
        with self._lock:
            index = self._partitions.get(partition)
            if index is None or not index.touch(key, expires_at):
                return False
            self._order.move_to_end((partition, key))
            return True

    def search(
        self, partition: str, vector: np.ndarray, k: int = 4, floor: float | None = None
    ) -> list[Candidate]:
        with self._lock:
            index = self._partitions.get(partition)
            return index.search(vector, k, time.time(), floor) if index else []

    def remove(self, keys: list[str]) -> None:
        with self._lock:
            for partition, index in self._partitions.items():
                self._forget(partition, index.remove(keys))

    def purge(self, *, model: str = "", namespace: str = "", key: str = "") -> None:
        """Remove what a purge covers: the conversations of a model, a namespace or one key
        (or where they meet)."""
        with self._lock:
            for partition, index in self._partitions.items():
                if model or namespace:
                    owner_namespace, owner_model = self._owners.get(partition, ("", ""))
                    if (model and model != owner_model) or (
                        namespace and namespace != owner_namespace
                    ):
                        continue
                self._forget(partition, index.remove([key] if key else index.keys()))
            self._drop_empty()

    def drop_expired(self) -> int:
        now = time.time()
        dropped = 0
        with self._lock:
            for partition, index in self._partitions.items():
                expired = index.drop_expired(now)
                self._forget(partition, expired)
                dropped += len(expired)
            self._drop_empty()
        return dropped

    def _forget(self, partition: str, keys: list[str]) -> None:
        for key in keys:
            del self._order[(partition, key)]

    def _drop_empty(self) -> None:
        self._partitions = {p: i for p, i in self._partitions.items() if len(i)}
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
