"""Keeps this process's semantic index in step with L3.

At start it loads every unexpired vector from L3 in bulk (so a restart keeps semantic hits), then
follows the rows written since (new ones and ones stored again) every SEMANTIC_SYNC_S,
which brings in what other processes and warming workers stored, and drops expired
vectors now and then. It runs in a daemon thread.
"""

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import numpy as np
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import Q
from django.utils import timezone

from cache import purge_log
from cache.models import CacheEntry
from cache.semantic import quantised, vector_index

log = logging.getLogger(__name__)
_BATCH = 5000
_BULK = 50_000  # rows per batch of the load at start
_started = threading.Event()


def start(*, preload_embedder: Callable[[], bool]) -> None:
    """Follow L3 in a daemon thread; `preload_embedder` says (once, in that thread) whether
    any model matches semantically, so the embedder loads before the first request."""
    if not _started.is_set():
        _started.set()
        threading.Thread(
            target=_follow_forever, args=(preload_embedder,), name="semantic-sync", daemon=True
        ).start()


class KnownKeys:
    """Which exact keys L3 holds, so a miss in L1 and L2 skips the database when L3 cannot
    have the answer either. Until the first full load it answers "maybe" for every key.

    A bitmap over the keys' first 26 bits (8 MiB), whatever the number of entries: a key
    L3 does not hold may show as known (one database lookup, about 1.5% of misses at 1M
    entries), a key it holds never shows as unknown."""

    BITS = 26

    def __init__(self) -> None:
        self._bitmap = bytearray(1 << (self.BITS - 3))
        self.loaded = False

    def add(self, key: str) -> None:
        # A key that is not a hex digest (a row put there by hand) can never be looked up;
        # refusing it here stopped the sync at that row for good.
        with contextlib.suppress(ValueError):
            bit = self._bit(key)
            self._bitmap[bit >> 3] |= 1 << (bit & 7)

    def add_many(self, keys: list[str]) -> None:
        """`add` for many keys at once: the hex digests in one numpy pass, the others one
        by one."""
        heads = np.array(keys, dtype="S7").view(np.uint8).reshape(len(keys), 7)
        nibbles = _HEX[heads]
        digests = (nibbles < 16).all(axis=1) & (np.char.str_len(np.array(keys, "U7")) == 7)
        values = np.zeros(len(keys), dtype=np.int64)
        for column in range(7):
            values = (values << 4) | nibbles[:, column]
        bits = values[digests] >> (28 - self.BITS)
        bitmap = np.frombuffer(self._bitmap, dtype=np.uint8)
        np.bitwise_or.at(bitmap, bits >> 3, (1 << (bits & 7)).astype(np.uint8))
        for i in np.flatnonzero(~digests):
            self.add(keys[i])

    def might_contain(self, key: str) -> bool:
        if not self.loaded:
            return True
        bit = self._bit(key)
        return bool(self._bitmap[bit >> 3] & (1 << (bit & 7)))

    def _bit(self, key: str) -> int:
        return int(key[:7], 16) >> (28 - self.BITS)


known_keys = KnownKeys()
# Hex digit values of ASCII bytes; 16 for every other byte.
_HEX = np.full(256, 16, dtype=np.int64)
for _digit in b"0123456789abcdef":
    _HEX[_digit] = _HEX[ord(chr(_digit).upper())] = int(chr(_digit), 16)


# Where the sync goes on: (updated_at, id) of the last row it read.
Cursor = tuple[datetime, int]
# Rows commit in another order than their updated_at (writers in several processes, each
# stamping the time before its transaction commits): every poll reads again the rows
# written this long before the newest one it has seen.
OVERLAP_S = 5.0


def load_changed(after: Cursor | None) -> Cursor | None:
    """Add the unexpired rows written after `after` (all of them when None: `load_all`) to
    the known keys and, those with a vector, to the index; returns the cursor of the last
    row read. Every upsert moves a row's `updated_at`, so entries stored again (by this
    process, another one, or a warming worker; also rows expired but not yet pruned) come
    back with their new expiry. Conversations the index holds already only get their
    expiry; the vector is read for the others. Rows without a vector cost one (id, key,
    updated_at) triple: every answer of a model without semantic matching passes here."""
    if after is None:
        return load_all()
    index = vector_index.index()
    while True:
        changed = CacheEntry.objects.filter(expires_at__gt=timezone.now()).filter(
            Q(updated_at__gt=after[0]) | Q(updated_at=after[0], id__gt=after[1])
        )
        rows = list(
            changed.order_by("updated_at", "id").values_list("id", "key", "updated_at")[:_BATCH]
        )
        if not rows:
            return after
        for _, key, _ in rows:
            known_keys.add(key)
        with_vectors = CacheEntry.objects.filter(
            id__in=[row_id for row_id, _, _ in rows],
            semantic_eligible=True,
            embedding__isnull=False,
        ).values_list("id", "partition", "key", "expires_at", "created_at", "namespace", "model")
        unindexed = [
            row_id
            for row_id, partition, key, expires_at, created_at, namespace, model in with_vectors
            if not purge_log.log.covers(
                model=model, namespace=namespace, key=key, created_at=created_at.timestamp()
            )
            and not index.touch(partition, key, expires_at.timestamp())
        ]
        if unindexed:
            batch = _Batch()
            for values in CacheEntry.objects.filter(id__in=unindexed).values_list(
                "partition", "key", "expires_at", "embedding", "namespace", "model"
            ):
                partition, key, expires_at, embedding, namespace, model = values
                batch.put(partition, key, expires_at.timestamp(), embedding, (namespace, model))
            batch.add_to(index)
        after = (rows[-1][2], rows[-1][0])
        if len(rows) < _BATCH:
            return after


def load_all() -> Cursor | None:
    """Load every unexpired row at once (a process's start): the keys into the known keys,
    the vectors into the index, in bulk. On Postgres one server-side cursor streams the
    rows in binary, and each batch's vectors become int8 codes in one numpy call; the
    index builds its graph in the background afterwards (flat search meanwhile). Returns
    the database's time at the start: the follow-up polls read again from a little
    before it (`_rewound`)."""
    index = vector_index.index()
    loader = _Loader(index)
    with transaction.atomic(), index.rebuilds_held():
        started = _now_in_database()
        for rows in _all_rows():
            loader.add(rows)
    return (started, 0)


class _Loader:
    """Indexes the rows of the bulk load, a batch at a time, with as little per-row Python
    as it can (a million rows pass here at a process's start): vectors are copied into
    one reused buffer and made codes there."""

    def __init__(self, index: vector_index.SemanticIndex) -> None:
        self.index = index
        self._raw = bytearray()
        self._codes = np.empty((0, index.dim), dtype=np.float32)

    def add(self, rows: list["_Row"]) -> None:
        known_keys.add_many([row[0] for row in rows])
        size = 4 * self.index.dim
        purges = purge_log.log.has_purges()
        groups: dict[str, list[_Row]] = {}
        for row in rows:
            embedding = row[6]
            if embedding is None or len(embedding) != size:
                continue
            if purges and purge_log.log.covers(
                model=row[3], namespace=row[2], key=row[0], created_at=row[5]
            ):
                continue
            groups.setdefault(row[1], []).append(row)
        for partition, found in groups.items():
            self.index.add_codes(
                partition,
                [row[0] for row in found],
                np.array([row[4] for row in found]),
                self._codes_of(found),
                owner=(found[0][2], found[0][3]),  # a partition has one namespace and model
            )

    def _codes_of(self, rows: list["_Row"]) -> np.ndarray:
        n, dim = len(rows), self.index.dim
        size = 4 * dim
        if len(self._raw) < n * size:
            self._raw = bytearray(n * size)
            self._codes = np.empty((n, dim), dtype=np.float32)
        view = memoryview(self._raw)
        for i, row in enumerate(rows):
            view[i * size : (i + 1) * size] = row[6]  # type: ignore[assignment]
        vectors = np.frombuffer(self._raw, dtype=np.float32, count=n * dim).reshape(n, dim)
        return quantised.float_codes(vectors, out=self._codes[:n])


# (key, partition, namespace, model, expires_at, created_at, float32 embedding or None)
_Row = tuple[str, str, str, str, float, float, bytes | None]


def _all_rows() -> Iterator[list[_Row]]:
    if connection.vendor != "postgresql":
        yield from _all_rows_portable()
        return
    raw = connection.connection  # this thread's, in the transaction: the fetcher uses it
    assert raw is not None
    batches: queue.Queue[list[_Row] | BaseException | None] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def fetch() -> None:
        """The next batches are read (the database's and psycopg's work, which release
        the GIL) while this thread indexes the current one."""
        try:
            with raw.cursor(name="semantic_index_load", binary=True) as cursor:
                cursor.execute(
                    "SELECT key, partition, namespace, model,"
                    " extract(epoch FROM expires_at)::float8,"
                    " extract(epoch FROM created_at)::float8,"
                    " CASE WHEN semantic_eligible THEN embedding END"
                    f" FROM {CacheEntry._meta.db_table} WHERE expires_at > now()"
                )
                while not stop.is_set() and (rows := cursor.fetchmany(_BULK)):
                    batches.put(rows)
            batches.put(None)
        except BaseException as error:
            batches.put(error)

    fetcher = threading.Thread(target=fetch, name="semantic-load", daemon=True)
    fetcher.start()
    try:
        while (found := batches.get()) is not None:
            if isinstance(found, BaseException):
                raise found
            yield found
    finally:
        stop.set()
        while fetcher.is_alive():  # let it see the stop (it may wait to put a batch)
            with contextlib.suppress(queue.Empty):
                batches.get(timeout=0.1)


def _all_rows_portable() -> Iterator[list[_Row]]:
    rows: list[_Row] = []
    for key, partition, namespace, model, expires_at, created_at, eligible, embedding in (
        CacheEntry.objects.filter(expires_at__gt=timezone.now())
        .values_list(
            "key",
            "partition",
            "namespace",
            "model",
            "expires_at",
            "created_at",
            "semantic_eligible",
            "embedding",
        )
        .iterator(chunk_size=_BATCH)
    ):
        vector = bytes(embedding) if eligible and embedding is not None else None
        rows.append(
            (
                key,
                partition,
                namespace,
                model,
                expires_at.timestamp(),
                created_at.timestamp(),
                vector,
            )
        )
        if len(rows) == _BULK:
            yield rows
            rows = []
    if rows:
        yield rows


def _now_in_database() -> datetime:
    if connection.vendor != "postgresql":
        return timezone.now()
    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        found: datetime = cursor.fetchone()[0]
        return found


class _Batch:
    """Vectors to index, by partition: added in one call per partition."""

    def __init__(self) -> None:
        self._parts: dict[str, tuple[list[str], list[float], list[bytes], tuple[str, str]]] = {}

    def put(
        self, partition: str, key: str, expires_at: float, embedding: bytes, owner: tuple[str, str]
    ) -> None:
        part = self._parts.get(partition)
        if part is None:
            part = self._parts[partition] = ([], [], [], owner)
        part[0].append(key)
        part[1].append(expires_at)
        part[2].append(bytes(embedding))

    def add_to(self, index: vector_index.SemanticIndex) -> None:
        for partition, (keys, expires, embeddings, owner) in self._parts.items():
            codes = quantised.codes_of_float32_bytes(b"".join(embeddings), index.dim)
            index.add_codes(partition, keys, np.array(expires), codes, owner=owner)


def _rewound(cursor: Cursor | None) -> Cursor | None:
    return None if cursor is None else (cursor[0] - timedelta(seconds=OVERLAP_S), 0)


def _follow_forever(preload_embedder: Callable[[], bool]) -> None:
    cursor: Cursor | None = None
    last_sweep = time.monotonic()
    if preload_embedder():
        from cache.semantic.embedder import get_embedder

        # The model loads now, not on the first request that needs it; alongside the
        # index, which a process with a million entries takes seconds to load.
        threading.Thread(target=get_embedder, name="embedder-preload", daemon=True).start()
    while True:
        try:
            close_old_connections()
            found = load_changed(_rewound(cursor))
            cursor = found if cursor is None or (found and found > cursor) else cursor
            known_keys.loaded = True
            if time.monotonic() - last_sweep > 60:
                vector_index.index().drop_expired()
                last_sweep = time.monotonic()
        except Exception:
            log.warning("semantic index sync failed; retrying", exc_info=True)
        time.sleep(settings.SEMANTIC_SYNC_S)
