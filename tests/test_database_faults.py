"""PostgreSQL going away and coming back, on a private server stopped and started here: a
node started without it answers 503 until its configuration loads (its readiness says so
within a second), and after a restart of the database every path works again without a
restart of the node."""

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from redis import Redis

from devtools.servers import PostgresServer, private_postgres, private_redis
from tests.processes import (
    ROOT,
    Process,
    Reply,
    http,
    server_env,
    start_gateway,
    stop_process,
    wait_until,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="needs PostgreSQL's binaries")


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    with private_postgres() as server:
        yield server


def manage(env: dict[str, str], *command: str, stdin: str = "") -> str:
    args = [sys.executable, "manage.py", *command]
    done = subprocess.run(
        args, cwd=ROOT, env=env, input=stdin, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def prepared(env: dict[str, str], fake_upstream: Process) -> str:
    """The database migrated, with model `m` on the fake upstream; a service key."""
    manage(env, "migrate", "--noinput")
    endpoint = f"{{name: e, base_url: '{fake_upstream.url}/v1', model: x}}"
    manage(
        env, "import_models", "/dev/stdin", stdin=f"models: [{{name: m, endpoints: [{endpoint}]}}]"
    )
    return manage(env, "create_service_key", "restarts").split()[-1]


def chat(node: Process, key: str, body: dict) -> Reply:
    return http(f"{node.url}/v1/chat/completions", method="POST", key=key, body=body)


def submit(node: Process, key: str) -> str:
    body = {"model": "m", "messages": [{"role": "user", "content": "a job"}]}
    reply = http(f"{node.url}/v1/chat/completions", method="POST", key=key, body=body,
                 headers={"X-BeastMode-Async": "true"})  # fmt: skip
    assert reply.status == 202, reply.body
    return str(reply.json()["id"])


def test_a_node_started_without_its_database_serves_once_the_database_is_back(
    postgres: PostgresServer, fake_upstream: Process
) -> None:
    env = {**server_env(), "DATABASE_URL": postgres.url}
    env.pop("REDIS_URL", None)
    key = prepared(env, fake_upstream)
    postgres.stop()

    node = start_gateway("database-unreachable", env)
    try:
        url = f"{node.url}/v1/chat/completions"
        body = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
        reply = http(url, method="POST", key=key, body=body)
        assert reply.status == 503 and reply.json()["error"]["code"] == "config_unavailable"
        started = time.monotonic()
        readiness = http(f"{node.url}/health/readiness")
        assert time.monotonic() - started < 1.0
        assert readiness.status == 503 and readiness.json()["database"].startswith("error")

        postgres.start()
        wait_until(lambda: http(url, method="POST", key=key, body=body).status == 200, 10)
        wait_until(lambda: http(f"{node.url}/health/readiness").status == 200, 5)
    finally:
        stop_process(node)


def test_after_a_database_restart_every_path_reconnects_without_a_node_restart(
    postgres: PostgresServer, fake_upstream: Process
) -> None:
    env = {**server_env(), "DATABASE_URL": postgres.url, "BEASTMODE_METRICS_TOKEN": "drill-token"}
    key = prepared(env, fake_upstream)
    node = start_gateway("database-restart", env)
    try:
        body = {"model": "m", "messages": [{"role": "user", "content": "before"}]}
        assert chat(node, key, body).status == 200
        job_id = submit(node, key)

        postgres.stop()
        postgres.start()

        wait_until(lambda: http(f"{node.url}/health/readiness").status == 200, 5)
        after = [chat(node, key, {**body, "messages": [{"role": "user", "content": "after"}]}),
                 http(f"{node.url}/v1/jobs/{job_id}", key=key)]  # fmt: skip
        assert [reply.status for reply in after] == [200, 200]
        snapshot = http(f"{node.url}/monitoring/api/snapshot?window=15m", key="drill-token")
        assert snapshot.status == 200  # a Django view that reads the database
        assert http(f"{node.url}/v1/jobs/{submit(node, key)}", key=key).status == 200
    finally:
        stop_process(node)


def count_rows(postgres: PostgresServer, table: str, where: str = "true") -> int:
    with psycopg.connect(postgres.url) as connection:
        return int(connection.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()[0])


def test_with_the_database_down_requests_are_answered_without_waiting_for_it(
    postgres: PostgresServer, fake_upstream: Process
) -> None:
    with private_redis() as redis:
        # L1 keeps one answer only, so that an answer can be in L3 and nowhere else.
        env = {**server_env(), "DATABASE_URL": postgres.url, "REDIS_URL": redis.url,
               "BEASTMODE_CACHE_L1_MAX_ENTRIES": "1"}  # fmt: skip
        key = prepared(env, fake_upstream)
        node = start_gateway("database-down", env)
        try:

            def ask(text: str) -> Reply:
                body = {"model": "m", "messages": [{"role": "user", "content": text}]}
                return chat(node, key, body)

            assert [ask("only in L3").status, ask("pushes it out of L1").status] == [200, 200]
            wait_until(lambda: count_rows(postgres, "cache_cacheentry") == 2, 10)
            Redis.from_url(redis.url).flushdb()  # L2 forgets it too

            postgres.stop()
            timings = []
            for text in ["only in L3", *(f"new {i}" for i in range(10))]:
                started = time.monotonic()
                assert ask(text).status == 200
                timings.append(time.monotonic() - started)

            assert max(timings) < 0.6, timings  # (the pool alone waited 5 s, was 30 s)
            started = time.monotonic()
            job = http(f"{node.url}/v1/chat/completions", method="POST", key=key,
                       headers={"X-BeastMode-Async": "true"}, body={"model": "m", "messages": [
                           {"role": "user", "content": "a job"}]})  # fmt: skip
            assert job.status == 503 and job.json()["error"]["code"] == "database_unavailable"
            assert time.monotonic() - started < 1.5
            postgres.start()
            sent = 2 + 11 + 1
            wait_until(lambda: count_rows(postgres, "monitoring_requestrecord") == sent, 20)
            assert count_rows(postgres, "routing_asyncjob") == 0, "the refused job is not run"
        finally:
            stop_process(node)


def test_sigterm_with_the_database_down_spools_the_records_and_exits_within_the_grace(
    postgres: PostgresServer, fake_upstream: Process, tmp_path: Path
) -> None:
    env = {**server_env(), "DATABASE_URL": postgres.url, "BEASTMODE_VAR_DIR": str(tmp_path),
           "BEASTMODE_SHUTDOWN_GRACE_S": "8"}  # fmt: skip
    env.pop("REDIS_URL", None)
    key = prepared(env, fake_upstream)
    node = start_gateway("database-down-sigterm", env)
    try:
        postgres.stop()
        body = {"model": "m", "messages": [{"role": "user", "content": "to the spool"}]}
        ids = [chat(node, key, body).headers["x-request-id"] for _ in range(3)]
        started = time.monotonic()
        node.popen.send_signal(signal.SIGTERM)
        assert node.popen.wait(timeout=10) == 0
        assert time.monotonic() - started < 8
    finally:
        stop_process(node)

    spooled = (tmp_path / "unwritten-records.jsonl").read_text()
    assert all(request_id in spooled for request_id in ids)
