"""What happens to request records (and cache writes) still queued when a server stops."""

import signal
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.conf import settings

from cache.models import CacheEntry
from monitoring import recorder
from monitoring.models import RequestRecord
from tests.personas import Client, ModelFactory, record_for
from tests.processes import (
    Process,
    free_port,
    http,
    server_env,
    start_process,
    stop_process,
    wait_until,
)

SERVERS = {
    "daphne": ["-m", "daphne", "-b", "127.0.0.1", "-p", "{port}", "beastmode.asgi:application"],
    "uvicorn": ["-m", "uvicorn", "beastmode.asgi:application", "--host", "127.0.0.1",
                "--port", "{port}", "--no-access-log"],
}  # fmt: skip


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_sigterm_flushes_queued_records_and_cache_entries(
    server: str, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("")
    port = free_port()
    env = {  # neither records nor L3 writes leave on their own: only the shutdown flushes
        **server_env(),
        "BEASTMODE_RECORD_FLUSH_INTERVAL_S": "3600",
        "BEASTMODE_CACHE_L3_WRITE_INTERVAL_S": "3600",
    }
    args = [sys.executable, *(a.replace("{port}", str(port)) for a in SERVERS[server])]
    process: Process = start_process(args, port, f"shutdown-{server}", env)
    try:
        body = {"model": model, "messages": [{"role": "user", "content": "bye"}]}
        ids = []
        for _ in range(5):
            url = f"{process.url}/v1/chat/completions"
            reply = http(url, method="POST", key=alice.key, body=body)
            assert reply.status == 200
            ids.append(reply.headers["x-request-id"])
        assert not RequestRecord.objects.filter(request_id__in=ids).exists(), "still queued"
        assert not CacheEntry.objects.filter(model=model).exists(), "L3 write still queued"

        process.popen.send_signal(signal.SIGTERM)
        assert process.popen.wait(timeout=15) is not None
    finally:
        stop_process(process)  # a failed test must not leave a server holding the test DB

    assert RequestRecord.objects.filter(request_id__in=ids).count() == 5
    assert CacheEntry.objects.filter(model=model).count() == 1  # the answer to "bye"
    assert "Unclosed" not in process.log_path.read_text()  # the upstream pool was closed


def test_records_beyond_the_memory_bound_wait_in_the_spool(
    transactional_db: None, settings: object
) -> None:
    settings.RECORD_MAX_PENDING = 2  # type: ignore[attr-defined]
    base = {"created_at": datetime.now(UTC), "path": "/v1/models", "outcome": "success",
            "status_code": 200, "latency_ms": 1.0}  # fmt: skip
    with recorder._write_lock:  # as while the database is down: no flush gets through
        recorder._pending.extend(
            recorder._pack({**base, "request_id": f"overflow-{i}"}) for i in range(5)
        )
        recorder._spool_overflow()
        assert recorder.pending_count() == 2
        assert len(settings.RECORD_SPOOL_PATH.read_text().splitlines()) == 3  # type: ignore[attr-defined]
    recorder._replay_spool()  # (or the writer thread does, if one runs in this process)
    recorder.flush()
    overflowed = RequestRecord.objects.filter(request_id__startswith="overflow-")
    assert wait_until(lambda: overflowed.count() == 5)


def test_spooled_records_are_replayed_once_at_the_next_start(transactional_db: None) -> None:
    record = {
        "request_id": "spooled-1", "created_at": datetime.now(UTC), "path": "/v1/models",
        "outcome": "success", "status_code": 200, "latency_ms": 1.0,
    }  # fmt: skip
    recorder._spool([recorder._pack(record)])
    assert settings.RECORD_SPOOL_PATH.exists()

    recorder._replay_spool()  # (or this process's writer thread, after its next flush)
    recorder.flush()

    assert not settings.RECORD_SPOOL_PATH.exists()
    assert record_for("spooled-1").outcome == "success"
    assert RequestRecord.objects.filter(request_id="spooled-1").count() == 1


def test_a_spool_written_by_an_older_version_is_replayed_too(transactional_db: None) -> None:
    """Before session 5 a spooled record had only the fields it set, and its time in ISO
    form with an offset: an upgrade must not lose the records an older process spooled."""
    old_line = (
        b'{"request_id": "spooled-old", "created_at": "2026-11-24T13:30:05.123456+01:00", '
        b'"path": "/v1/models", "outcome": "success", "status_code": 200, "latency_ms": 1.0}'
    )
    recorder._spool([old_line])

    recorder._replay_spool()  # (or this process's writer thread, after its next flush)
    recorder.flush()

    record = record_for("spooled-old")
    assert record.created_at == datetime(2026, 11, 24, 12, 30, 5, 123456, tzinfo=UTC)
    assert (record.model, record.attempt_log, record.tokens_in) == ("", [], 0)  # defaults


def test_a_record_the_database_refuses_is_set_aside_and_the_rest_are_written(
    transactional_db: None, settings: object, tmp_path: Path
) -> None:
    settings.REJECTED_RECORDS_PATH = tmp_path / "rejected.jsonl"  # type: ignore[attr-defined]
    base = {"created_at": datetime.now(UTC), "path": "/v1/chat/completions",
            "outcome": "success", "status_code": 200, "latency_ms": 1.0}  # fmt: skip
    recorder._pending.extend([
        recorder._pack({**base, "request_id": "fine-1"}),
        recorder._pack({**base, "request_id": "too-many-tokens", "tokens_in": 2**40}),
        b'{"request_id": "cut-off-by-a-cra',  # a spool line torn by a crash
        recorder._pack({**base, "request_id": "fine-2"}),
    ])  # fmt: skip

    assert recorder.flush() == 2

    assert recorder.pending_count() == 0
    assert set(RequestRecord.objects.values_list("request_id", flat=True)) == {"fine-1", "fine-2"}
    rejected = settings.REJECTED_RECORDS_PATH.read_text().splitlines()  # type: ignore[attr-defined]
    assert len(rejected) == 2 and "too-many-tokens" in rejected[0]


def test_a_writer_stuck_in_a_write_at_exit_sends_the_queue_to_the_spool(
    settings: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database that hangs (rather than refuses) must not hang the process's exit."""
    settings.RECORD_SPOOL_PATH = tmp_path / "spool.jsonl"  # type: ignore[attr-defined]
    base = {"created_at": datetime.now(UTC), "path": "/v1/models", "outcome": "success",
            "status_code": 200, "latency_ms": 1.0}  # fmt: skip
    recorder._pending.extend(recorder._pack({**base, "request_id": f"q-{i}"}) for i in range(3))
    stuck = threading.Thread(target=recorder._write_lock.acquire)  # held, as by a hung write
    stuck.start()
    stuck.join()
    try:
        started = time.monotonic()
        monkeypatch.setattr(recorder, "EXIT_FLUSH_TIMEOUT_S", 0.2)
        recorder._flush_at_exit()
        assert time.monotonic() - started < 5
        assert recorder.pending_count() == 0
        # Read, and removed, while the lock is held: a record writer thread an earlier test
        # started would replay the spool as soon as it gets the lock.
        spool: Path = settings.RECORD_SPOOL_PATH  # type: ignore[attr-defined]
        spooled = spool.read_text().splitlines()
        spool.unlink()
    finally:
        recorder._write_lock.release()
    assert len(spooled) == 3
