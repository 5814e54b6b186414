"""Request records: queued on the hot path, written in batches by a background thread.

`submit()` only appends to a deque (no I/O, no thread hop). The writer thread
bulk-inserts every RECORD_FLUSH_INTERVAL_S or RECORD_BATCH_SIZE records. Queued records
are JSON bytes, one untracked object each: as dicts (with their lists of attempts and
tips) every queued record was several objects for the cyclic garbage collector, which
promoted them all to its oldest generation, whose full passes pause every request in
flight; a backlog while the database is down made those pauses long. When the
database is down, records wait in memory and the writer retries; at exit whatever
cannot be written goes to a spool file (JSON lines) that the next start replays.
"""

import atexit
import contextlib
import logging
import threading
import time
from collections import deque
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, cast

import orjson
from django.conf import settings
from django.db import DataError, IntegrityError, close_old_connections, transaction

from beastmode.lib import fastjson, redaction
from beastmode.lib.rows import insert_json_rows, sqlite_datetime
from monitoring import metrics, rollups
from monitoring.models import RequestRecord
from monitoring.records import RequestRow

log = logging.getLogger(__name__)

_pending: deque[bytes] = deque()  # records packed by `_pack`
EXIT_FLUSH_TIMEOUT_S = 10.0  # then what is queued goes to the spool
_wakeup = threading.Event()
_write_lock = threading.Lock()
_last_write_failed = False  # the last write to the database failed (it is down)
_writer: threading.Thread | None = None
_start_lock = threading.Lock()


def submit(record: RequestRow) -> None:
    """Queue one record. Safe from any thread. Its error text is redacted first: the
    record is stored, counted and shown on the dashboard as it leaves here."""
    if record["error_message"] or record["error_tips"]:
        record["error_message"] = redaction.redact(record["error_message"])
        record["error_tips"] = [redaction.redact(tip) for tip in record["error_tips"]]
    metrics.observe_request(record)
    _pending.append(_pack(record))
    if _writer is None:
        _start_writer()
    if len(_pending) >= settings.RECORD_BATCH_SIZE:
        _wakeup.set()


def flush(timeout_s: float = -1) -> int:
    """Write every queued record now; returns how many were written. With `timeout_s`,
    raise TimeoutError when the writer thread is stuck in a write that long."""
    global _last_write_failed
    written = 0
    if not _write_lock.acquire(timeout=timeout_s):
        raise TimeoutError("the record writer is stuck in a database write")
    try:
        while _pending:
            batch = [_pending.popleft() for _ in range(min(len(_pending), 1000))]
            try:
                _write(batch)
            except (DataError, IntegrityError, ValueError):  # ValueError: a corrupt line
                written += _write_each_rejecting_bad(batch)
                continue
            except Exception:
                _pending.extendleft(reversed(batch))
                _last_write_failed = True
                raise
            _last_write_failed = False
            written += len(batch)
    finally:
        _write_lock.release()
    return written


def _write_each_rejecting_bad(batch: list[bytes]) -> int:
    """A batch the database refused for its data, not for being unreachable: write its
    records one at a time and set aside the ones it refuses (REJECTED_RECORDS_PATH), so
    that one bad record never holds back the others. Returns how many were written."""
    written = 0
    for at, packed in enumerate(batch):
        try:
            _write([packed])
            written += 1
        except (DataError, IntegrityError, ValueError) as exc:
            log.error("request record refused by the database (%s); set aside in %s",
                      exc, settings.REJECTED_RECORDS_PATH)  # fmt: skip
            _append_lines(settings.REJECTED_RECORDS_PATH, [packed])
        except Exception:  # unreachable now: the rest waits for the next flush
            _pending.extendleft(reversed(batch[at:]))
            raise
    return written


def flush_or_leave_to_writer() -> None:
    """Flush now if the database lets us; otherwise the writer thread retries later."""
    try:
        flush()
    except Exception:
        log.warning("request records not written yet; the writer retries", exc_info=True)


def write_out(deadline: float) -> None:
    """At shutdown: write every queued record by `deadline` (monotonic), or spool them;
    the next process to start replays the spool. A write the writer thread has under
    way is waited for until then; when the last write failed the database is not tried
    again (the pool would wait for it longer than a shutdown may)."""
    if _write_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
        _write_lock.release()  # no write under way now
        if not _last_write_failed:
            with contextlib.suppress(Exception):
                flush(timeout_s=max(0.0, deadline - time.monotonic()))
    spool_pending()


def spool_pending() -> None:
    """Move every queued record to the spool."""
    records = []
    while _pending:
        records.append(_pending.popleft())
    if records:
        _spool(records)
        log.warning("spooled %d request records to %s", len(records), settings.RECORD_SPOOL_PATH)


def pending_count() -> int:
    return len(_pending)


def _write(batch: list[bytes]) -> None:
    """Write packed records (ValueError: a line that is not one, as a torn spool line)."""
    records = [_unpack(packed) for packed in batch]
    with transaction.atomic():
        # Rollups first: the same table order as a TRUNCATE of both, so never a deadlock.
        rollups.update_from(records)
        insert_json_rows(RequestRecord, list(_defaults()), batch)
    metrics.observe_written(len(batch))


@cache
def _defaults() -> dict[str, Any]:
    """Every column but the id, with its default."""
    fields = [f for f in RequestRecord._meta.concrete_fields if not f.primary_key]
    return {f.attname: f.get_default() for f in fields}


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
            backoff_s = min(backoff_s * 2, 5.0)  # records land within 5 s of the return
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
    write_out(time.monotonic() + EXIT_FLUSH_TIMEOUT_S)


def _spool(records: list[bytes]) -> None:
    _append_lines(settings.RECORD_SPOOL_PATH, records)


def _append_lines(path: Path, records: list[bytes]) -> None:
    """Append packed records to a file, one JSON object per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as file:
        file.writelines(record + b"\n" for record in records)


def _replay_spool() -> None:
    path: Path = settings.RECORD_SPOOL_PATH
    claimed = path.with_suffix(f".replay-{time.time_ns()}")
    try:
        path.rename(claimed)  # atomic: no other process replays the same file
    except FileNotFoundError:
        return
    _pending.extend(_repack(line) for line in claimed.read_bytes().splitlines() if line.strip())
    claimed.unlink()
    log.info("replaying %d spooled request records", len(_pending))


def _pack(record: RequestRow) -> bytes:
    """A record as the JSON object `insert_json_rows` inserts: every column (the defaults
    fill in what an older version's spooled record lacks), the time as Django stores it on
    SQLite (Postgres reads the same text)."""
    return fastjson.dumps(
        {**_defaults(), **record, "created_at": sqlite_datetime(record["created_at"])}
    )


def _unpack(packed: bytes) -> RequestRow:
    """A packed record, its time aware (ValueError if it is not a record).
    orjson: the bytes are its own output (`_pack`), where it and json.loads agree."""
    try:
        record: dict[str, Any] = orjson.loads(packed)
        created_at = datetime.fromisoformat(record["created_at"])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a packed request record: {exc!r}") from None
    record["created_at"] = created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC)
    return cast(RequestRow, record)  # complete unless an older version spooled it: _repack


def _repack(line: bytes) -> bytes:
    """A spooled record in today's packing (an older version's spool may differ); a line
    that is not a record stays as it is, to be set aside when written."""
    try:
        return _pack(_unpack(line))
    except ValueError:
        return line
