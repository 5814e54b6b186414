"""A node started while PostgreSQL is unreachable answers 503 until its configuration
loads (its readiness says so within a second), then serves, without a restart (a private
PostgreSQL, stopped and started here)."""

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from devtools.servers import PostgresServer, private_postgres
from tests.processes import ROOT, Process, http, server_env, start_gateway, stop_process, wait_until

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


def test_a_node_started_without_its_database_serves_once_the_database_is_back(
    postgres: PostgresServer, fake_upstream: Process
) -> None:
    env = {**server_env(), "DATABASE_URL": postgres.url}
    env.pop("REDIS_URL", None)
    manage(env, "migrate", "--noinput")
    upstream = f"{{name: e, base_url: '{fake_upstream.url}/v1', model: x}}"
    models = f"models: [{{name: m, endpoints: [{upstream}]}}]"
    manage(env, "import_models", "/dev/stdin", stdin=models)
    key = manage(env, "create_service_key", "late-start").split()[-1]
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
        assert http(f"{node.url}/health/readiness").status == 200
    finally:
        stop_process(node)
