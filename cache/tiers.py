"""The three cache tiers: L1 in process, L2 Redis (django-redis), L3 the database.

All three store the same `Entry`. L1 is called on the event loop (memory only); L2 and
L3 do blocking I/O and are called from a worker thread by cache/service.py.
"""

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import orjson
from django.conf import settings
from django.core.cache import caches
from django.db import connection, transaction

from beastmode.lib import fastjson
from beastmode.lib.rows import write_rows
from cache.models import CacheEntry

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Entry:
    key: str
    namespace: str
    model: str
    partition: str
    prompt_text: str
    semantic_eligible: bool
    request: dict[str, Any]
    response: dict[str, Any]
    tokens_in: int
    tokens_out: int
    endpoint: str
    created_at: float  # epoch seconds
    expires_at: float
    size_bytes: int = 0

    def __post_init__(self) -> None:
        if not self.size_bytes:
            self.size_bytes = len(fastjson.dumps(self.response)) + len(self.prompt_text)

    def remaining_s(self, now: float) -> float:
        return self.expires_at - now


# An L1 entry: (JSON bytes, until, model, namespace, their length). A plain tuple of atomic
# values, which the cyclic garbage collector stops tracking (it does not untrack tuple
# subclasses such as a NamedTuple); a live Entry's nested dicts cost it ~10 objects each.
# Tracked L1 entries made its full collections take tens of milliseconds (latency tail).
_Packed = tuple[bytes, float, str, str, int]
_DATA, _UNTIL, _MODEL, _NAMESPACE, _SIZE = range(5)


class MemoryTier:
    """L1: LRU bounded by entry count and bytes, with per-entry expiry. Thread-safe.
    Each get returns a fresh Entry: callers cannot change what is cached."""

    name = "L1"

    def __init__(self, *, max_entries: int, max_bytes: int, ttl_s: int) -> None:
        self.max_entries, self.max_bytes, self.ttl_s = max_entries, max_bytes, ttl_s
        self._entries: OrderedDict[str, _Packed] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str, now: float) -> Entry | None:
        with self._lock:
            packed = self._entries.get(key)
            if packed is None:
                return None
            if packed[_UNTIL] <= now:
                self._drop(key)
                return None
            self._entries.move_to_end(key)
        return Entry(**orjson.loads(packed[_DATA]))

    def put(self, entry: Entry, now: float) -> None:
        until = min(now + self.ttl_s, entry.expires_at)
        if until <= now:
            return
        data = fastjson.dumps(vars(entry))  # the whole entry, request included, is held
        if len(data) > self.max_bytes:
            return
        packed: _Packed = (data, until, entry.model, entry.namespace, len(data))
        with self._lock:
            if entry.key in self._entries:
                self._drop(entry.key)
            self._entries[entry.key] = packed
            self._bytes += len(data)
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                self._drop(next(iter(self._entries)))

    def delete(self, key: str) -> None:
        with self._lock:
            if key in self._entries:
                self._drop(key)

    def purge(self, *, model: str = "", namespace: str = "", key: str = "") -> None:
        with self._lock:
            doomed = [
                k
                for k, packed in self._entries.items()
                if (not model or packed[_MODEL] == model)
                and (not namespace or packed[_NAMESPACE] == namespace)
                and (not key or k == key)
            ]
            for k in doomed:
                self._drop(k)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, key: str) -> None:
        self._bytes -= self._entries.pop(key)[_SIZE]


class RedisTier:
    """L2 through django-redis. Fails open: errors are misses, and after repeated errors
    a breaker skips Redis for a while, so an outage costs one short timeout per window."""

    name = "L2"
    _PREFIX = "bm:cache:v1:"

    def __init__(self, *, ttl_s: int, failure_threshold: int = 3, cooldown_s: float = 10) -> None:
        self.ttl_s = ttl_s
        self.failure_threshold, self.cooldown_s = failure_threshold, cooldown_s
        self._failures = 0
        self._open_until = 0.0

    @property
    def available(self) -> bool:
        return bool(settings.REDIS_URL) and time.monotonic() >= self._open_until

    def get(self, key: str) -> Entry | None:
        raw = self._call(lambda: caches["default"].get(self._PREFIX + key))
        try:
            return Entry(**raw) if isinstance(raw, dict) else None
        except TypeError:  # written by another version: a miss, and it will be replaced
            return None

    def put(self, entry: Entry, now: float) -> None:
        self.put_many([entry], now)

    def put_many(self, entries: list[Entry], now: float) -> None:
        """One pipelined write per distinct lifetime (usually one for the whole batch)."""
        if not self.available:
            return
        by_timeout: dict[int, dict[str, dict[str, Any]]] = {}
        for entry in entries:
            timeout_s = int(min(self.ttl_s, entry.remaining_s(now)))
            if timeout_s > 1:
                by_timeout.setdefault(timeout_s, {})[self._PREFIX + entry.key] = asdict(entry)
        for timeout_s, values in by_timeout.items():
            self._call(lambda: caches["default"].set_many(values, timeout_s))  # noqa: B023

    def delete(self, key: str) -> None:
        self._call(lambda: caches["default"].delete(self._PREFIX + key))

    def run(self, command: Callable[[Any], T]) -> T | None:
        """`command(client)` on the raw redis-py client, behind this tier's breaker; None
        when Redis is unavailable or the command fails."""

        def on_client() -> T:
            django_redis = cast(Any, caches["default"]).client
            return command(django_redis.get_client(write=True))

        return self._call(on_client)

    def delete_many(self, keys: list[str]) -> None:
        if keys:
            self._call(lambda: caches["default"].delete_many([self._PREFIX + k for k in keys]))

    def _call(self, operation: Any) -> Any:
        if not self.available:
            return None
        try:
            result = operation()
        except Exception as exc:
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._open_until = time.monotonic() + self.cooldown_s
                log.warning(
                    "L2 cache (Redis) unavailable, skipped for %ss: %s", self.cooldown_s, exc
                )
            return None
        self._failures = 0
        return result


class DatabaseTier:
    """L3: the CacheEntry table. Expired rows are ignored here and pruned by a task."""

    name = "L3"

    def __init__(self, *, ttl_s: int) -> None:
        self.ttl_s = ttl_s

    def get(self, key: str, now: float) -> Entry | None:
        row = CacheEntry.objects.filter(key=key, expires_at__gt=_dt(now)).first()
        return _entry_from_row(row) if row else None

    @staticmethod
    def row(entry: Entry, embedding: bytes | None) -> "L3Row":
        """An entry as the row to upsert: a plain tuple of atomic values (the answer as JSON
        text), which the cyclic garbage collector does not track while it waits for the
        writer (an Entry's nested dicts are ~10 objects)."""
        return (
            entry.key, entry.namespace, entry.model, entry.partition, entry.prompt_text,
            entry.semantic_eligible, fastjson.dumps(entry.request).decode(),
            fastjson.dumps(entry.response).decode(), embedding, entry.size_bytes,
            entry.tokens_in, entry.tokens_out, entry.endpoint, 0, _dt(entry.created_at),
            _dt(entry.expires_at),
        )  # fmt: skip

    def put_rows(self, rows: list["L3Row"]) -> None:
        """Upsert rows made by `row` in one transaction, stamped with the time of the write
        (`updated_at`, which the semantic sync of every process follows)."""
        unique = {row[0]: row for row in rows}  # the last per key: unique within a statement
        written_at = _dt(time.time())
        with transaction.atomic():
            write_rows(
                CacheEntry, _INSERTED, [(*row, written_at) for row in unique.values()],
                conflict=["key"], update=_UPDATED, encoded_json=True,
            )  # fmt: skip

    def delete_covered(self, rows: list["L3Row"]) -> None:
        """Delete these rows unless they were written again since with a newer answer."""
        for row in rows:
            CacheEntry.objects.filter(key=row[0], created_at__lte=row[_CREATED_AT]).delete()

    def count_hits(self, hits: dict[str, int]) -> None:
        table = connection.ops.quote_name(CacheEntry._meta.db_table)
        sql = f"UPDATE {table} SET hits = hits + %s WHERE {connection.ops.quote_name('key')} = %s"
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(sql, [(count, key) for key, count in hits.items()])

    def delete(self, key: str) -> None:
        CacheEntry.objects.filter(key=key).delete()


L3Row = tuple[Any, ...]  # DatabaseTier.row: the _INSERTED values but updated_at
_INSERTED = (
    "key", "namespace", "model", "partition", "prompt_text", "semantic_eligible", "request",
    "response", "embedding", "size_bytes", "tokens_in", "tokens_out", "endpoint", "hits",
    "created_at", "expires_at", "updated_at",
)  # fmt: skip
_UPDATED = (
    "response", "request", "embedding", "size_bytes", "tokens_in", "tokens_out", "endpoint",
    "created_at", "expires_at", "updated_at",
)  # fmt: skip
_CREATED_AT = _INSERTED.index("created_at")


def row_scope(row: L3Row) -> tuple[str, str, str, float]:
    """(model, namespace, key, created_at) of a row made by `DatabaseTier.row`."""
    return row[2], row[1], row[0], row[_CREATED_AT].timestamp()


def _dt(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, tz=UTC)


def _entry_from_row(row: CacheEntry) -> Entry:
    return Entry(
        key=row.key,
        namespace=row.namespace,
        model=row.model,
        partition=row.partition,
        prompt_text=row.prompt_text,
        semantic_eligible=row.semantic_eligible,
        request=row.request,
        response=row.response,
        tokens_in=row.tokens_in,
        tokens_out=row.tokens_out,
        endpoint=row.endpoint,
        created_at=row.created_at.timestamp(),
        expires_at=row.expires_at.timestamp(),
        size_bytes=row.size_bytes,
    )
