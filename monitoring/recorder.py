"""Request records: queued on the hot path, written in batches by a background thread.

`submit()` only appends to a deque (no I/O, no thread hop). The writer thread
bulk-inserts every RECORD_FLUSH_INTERVAL_S or RECORD_BATCH_SIZE records. When the
database is down, records wait in memory and the writer retries; at exit whatever
cannot be written goes to a spool file (JSON lines) that the next start replays.
"""

import atexit
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import Field

from monitoring import metrics, rollups
from monitoring.models import RequestRecord
from routing import fastjson

log = logging.getLogger(__name__)

# SQLite allows 32,766 parameters per statement, Postgres 65,535: ~40 columns × 200 rows.
_ROWS_PER_STATEMENT = 200
_pending: deque[dict[str, Any]] = deque()
_wakeup = threading.Event()
_write_lock = threading.Lock()
_writer: threading.Thread | None = None
_start_lock = threading.Lock()


def submit(record: dict[str, Any]) -> None:
    """Queue one record (field names of RequestRecord). Safe from any thread."""
    metrics.observe_request(record)
    _pending.append(record)
    if _writer is None:
        _start_writer()
    if len(_pending) >= settings.RECORD_BATCH_SIZE:
        _wakeup.set()


def flush() -> int:
    """Write every queued record now; returns how many were written."""
    written = 0
    with _write_lock:
        while _pending:
            batch = [_pending.popleft() for _ in range(min(len(_pending), 1000))]
            try:
                _write(batch)
            except Exception:
                _pending.extendleft(reversed(batch))
                raise
            written += len(batch)
    return written


def flush_or_leave_to_writer() -> None:
    """Flush now if the database lets us; otherwise the writer thread retries later."""
    try:
        flush()
    except Exception:
        log.warning("request records not written yet; the writer retries", exc_info=True)


def pending_count() -> int:
    return len(_pending)


def _write(batch: list[dict[str, Any]]) -> None:
    """Multi-row INSERTs of plain values. Not the ORM: bulk_create spent more CPU (and GIL)
    compiling SQL than the database spent writing. Not executemany: it hands the GIL over
    for every row, and with the event loop busy each hand-back waited for the switch
    interval, so the writer fell behind under load."""
    columns = _columns()
    values = [
        convert(record.get(name, default)) for record in batch for name, default, convert in columns
    ]
    per_statement = _ROWS_PER_STATEMENT * len(columns)
    with transaction.atomic():
        # Rollups first: the same table order as a TRUNCATE of both, so never a deadlock.
        rollups.update_from(batch)
        with connection.cursor() as cursor:
            for start in range(0, len(values), per_statement):
                chunk = values[start : start + per_statement]
                cursor.execute(_insert_sql(len(chunk) // len(columns)), chunk)
    metrics.observe_written(len(batch))


@cache
def _columns() -> tuple[tuple[str, Any, Callable[[Any], Any]], ...]:
    """(record key, default, to-database converter) for every column but the id."""

    def convert(field: Field) -> Callable[[Any], Any]:
        kind = field.get_internal_type()
        if kind == "JSONField":
            return _json_text
        if kind == "DateTimeField":
            return connection.ops.adapt_datetimefield_value
        return lambda value: value

    fields = [f for f in RequestRecord._meta.concrete_fields if not f.primary_key]
    return tuple((f.attname, f.get_default(), convert(f)) for f in fields)


def _json_text(value: Any) -> str:
    return fastjson.dumps(value).decode()


@lru_cache(maxsize=64)
def _insert_sql(rows: int) -> str:
    quote = connection.ops.quote_name
    fields = [f for f in RequestRecord._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(quote(f.column) for f in fields)
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    table = quote(RequestRecord._meta.db_table)
    return f"INSERT INTO {table} ({columns}) VALUES " + ", ".join([row] * rows)


def _start_writer() -> None:
    global _writer
    with _start_lock:
        if _writer is not None:
            return
        _writer = threading.Thread(target=_write_forever, name="record-writer", daemon=True)
        _writer.start()
        atexit.register(_flush_at_exit)


def _write_forever() -> None:
    _replay_spool()
    backoff_s = settings.RECORD_FLUSH_INTERVAL_S
    while True:
        _wakeup.wait(backoff_s)
        _wakeup.clear()
        if not _pending:
            continue
        try:
            close_old_connections()
            flush()
            backoff_s = settings.RECORD_FLUSH_INTERVAL_S
            _replay_spool()  # records spooled while the database was down
        except Exception:
            backoff_s = min(backoff_s * 2, 10.0)
            _spool_overflow()
            log.warning(
                "writing %d request records failed; retrying in %.1fs",
                len(_pending),
                backoff_s,
                exc_info=True,
            )


def _spool_overflow() -> None:
    """While the database is down, keep memory bounded: the oldest records go to the spool."""
    excess = len(_pending) - settings.RECORD_MAX_PENDING
    if excess > 0:
        _spool([_pending.popleft() for _ in range(excess)])


def _flush_at_exit() -> None:
    try:
        flush()
    except Exception:
        log.exception("database unavailable at exit; spooling %d records", len(_pending))
        _spool(list(_pending))
        _pending.clear()


def _spool(records: list[dict[str, Any]]) -> None:
    path: Path = settings.RECORD_SPOOL_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as spool:
        for record in records:
            spool.write(json.dumps(record, default=_json_default) + "\n")


def _replay_spool() -> None:
    path: Path = settings.RECORD_SPOOL_PATH
    claimed = path.with_suffix(f".replay-{time.time_ns()}")
    try:
        path.rename(claimed)  # atomic: no other process replays the same file
    except FileNotFoundError:
        return
    for line in claimed.read_text().splitlines():
        record = json.loads(line)
        record["created_at"] = datetime.fromisoformat(record["created_at"])
        _pending.append(record)
    claimed.unlink()
    log.info("replaying %d spooled request records", len(_pending))


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)
