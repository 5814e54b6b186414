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
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import close_old_connections, transaction

from beastmode.rows import write_rows
from monitoring import metrics, rollups
from monitoring.models import RequestRecord

log = logging.getLogger(__name__)

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
    with transaction.atomic():
        # Rollups first: the same table order as a TRUNCATE of both, so never a deadlock.
        rollups.update_from(batch)
        columns = _columns()
        write_rows(
            RequestRecord,
            [name for name, _ in columns],
            [[record.get(name, default) for name, default in columns] for record in batch],
        )
    metrics.observe_written(len(batch))


@cache
def _columns() -> tuple[tuple[str, Any], ...]:
    """(field name, default) of every column but the id."""
    fields = [f for f in RequestRecord._meta.concrete_fields if not f.primary_key]
    return tuple((f.name, f.get_default()) for f in fields)


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
