"""Shared fixtures: real processes on loopback, personas, and waiting helpers.

The gateway under test runs as a real daphne process against the test database,
and upstreams are the fake OpenAI server (devtools/fake_upstream.py) in its own
process, so timeouts, retries, pooling and records are exercised for real.
"""

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from django.conf import settings
from django.core.management import CommandError
from django.db import OperationalError, connection, transaction
from django.test import Client as BrowserClient
from django.test import TransactionTestCase

from monitoring.models import RequestRecord
from routing.models import ModelEndpoint, Route, RouteEndpoint
from routing.service_keys import create_service_key

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def _flush_retrying_deadlocks(self: TransactionTestCase) -> None:
    """Tests end with a TRUNCATE of every table while the live gateway may be writing
    records and rollups in one transaction; Postgres then sometimes picks the TRUNCATE as
    the deadlock victim. Production never truncates: retry here instead."""
    for attempt in range(5):
        try:
            return _original_fixture_teardown(self)
        except (OperationalError, CommandError):  # flush wraps the deadlock in CommandError
            if attempt == 4:
                raise
            time.sleep(0.2)


_original_fixture_teardown = TransactionTestCase._fixture_teardown
TransactionTestCase._fixture_teardown = _flush_retrying_deadlocks  # type: ignore[method-assign]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on port {port} within {timeout_s}s")


def wait_until(check: Callable[[], T], timeout_s: float = 5.0, interval_s: float = 0.05) -> T:
    """Poll until `check()` returns something truthy; returns it (or fails the test)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_s}s (last: {result!r})")
        time.sleep(interval_s)


@dataclass
class Process:
    url: str
    port: int
    log_path: Path
    popen: subprocess.Popen

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_process(args: list[str], port: int, name: str, env: dict[str, str]) -> Process:
    log_path = ROOT / "var" / f"test-{name}-{port}.log"
    log_path.parent.mkdir(exist_ok=True)
    log_file = log_path.open("w")
    popen = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
    )
    process = Process(url=f"http://127.0.0.1:{port}", port=port, log_path=log_path, popen=popen)
    try:
        wait_for_port(port, popen)
    except BaseException:
        stop_process(process)  # not left running (holding the test database) when it fails
        raise
    return process


def stop_process(process: Process) -> None:
    """Stop the process and everything it started (it leads its own session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.popen.pid, signal.SIGTERM)
    try:
        process.popen.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.popen.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[Process]:
    """The fake OpenAI server; path prefixes choose its failure modes."""
    port = free_port()
    process = start_process(
        [sys.executable, "-m", "devtools.fake_upstream", "--port", str(port)],
        port,
        "upstream",
        dict(os.environ),
    )
    yield process
    stop_process(process)


def server_env() -> dict[str, str]:
    """Environment for a gateway process that shares this session's test database."""
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "beastmode.settings_test"
    settings_dict = connection.settings_dict
    if settings_dict["ENGINE"].endswith("postgresql"):
        env["DATABASE_URL"] = (
            f"postgres://{settings_dict['USER']}@{settings_dict['HOST']}:"
            f"{settings_dict['PORT'] or 5432}/{settings_dict['NAME']}"
        )
    else:
        env["BEASTMODE_TEST_SQLITE_NAME"] = str(settings_dict["NAME"])
    return env


@pytest.fixture(scope="session", autouse=True)
def fresh_redis() -> None:
    """Start every run with an empty test Redis: no cache entries or tasks from earlier runs."""
    if settings.REDIS_URL:
        from django_redis import get_redis_connection

        get_redis_connection("default").flushdb()


@pytest.fixture(scope="session", autouse=True)
def no_sessions_left_at_teardown(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """The test database is dropped at the end, which fails while any session uses it:
    this process's connection pool (Django's psycopg pool keeps idle connections, also
    those the writer threads used) or a gateway process that has just exited. Flush the
    writers, close the pool, then wait (up to 1 s) until no session is left, and end the
    sessions still there."""
    yield
    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock():
        database = connection.settings_dict
        # What this process's writer threads still hold, written now: later, with the pool
        # closed, they would open a new one on a database that is being dropped.
        from cache.writer import lower_writer
        from monitoring import recorder

        recorder.flush()
        lower_writer.flush()
        connection.close()  # hands this thread's connection back, so the pool closes it
        connection.close_pool()
        with psycopg.connect(
            dbname="postgres", user=database["USER"], host=database["HOST"],
            port=database["PORT"] or 5432, autocommit=True,
        ) as admin:  # fmt: skip
            # Background threads (registry refresh, semantic sync) reopen sessions: the
            # wait rarely ends early, and ending them is safe (this process exits next).
            deadline = time.monotonic() + 1
            while time.monotonic() < deadline:
                row = admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                    [database["NAME"]],
                ).fetchone()
                if row is None or row[0] == 0:
                    break
                time.sleep(0.1)
            else:
                # Still in use: a background thread of this process (registry refresh,
                # semantic sync) has reopened a pool since. End those sessions so the drop
                # succeeds; the process exits next.
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    [database["NAME"]],
                )


def start_gateway(
    name: str, env: dict[str, str] | None = None, daphne_args: tuple[str, ...] = ()
) -> Process:
    """A BeastMode process under daphne (the default server) on a free port."""
    port = free_port()
    args = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), *daphne_args,
            "beastmode.asgi:application"]  # fmt: skip
    return start_process(args, port, name, env or server_env())


@pytest.fixture(scope="session")
def gateway(django_db_setup: None, django_db_blocker: Any) -> Iterator[Process]:
    """BeastMode itself, shared by the session."""
    process = start_gateway("gateway")
    yield process
    stop_process(process)


# --- personas and factories -------------------------------------------------------


@dataclass
class Client:
    """A service calling BeastMode: its raw key and the id of its key row."""

    name: str
    key: str
    key_id: int


def make_client(name: str, **kwargs: Any) -> Client:
    row, raw_key = create_service_key(name, **kwargs)
    return Client(name=name, key=raw_key, key_id=row.id)


def make_model(model_name: str, endpoints: list[ModelEndpoint], **route_fields: Any) -> Route:
    # In one transaction, as admin saves a route with its endpoints: a gateway refreshing
    # its registry in between would see the model without endpoints (503 no_endpoint).
    with transaction.atomic():
        route = Route.objects.create(model_name=model_name, **route_fields)
        for position, endpoint in enumerate(endpoints):
            RouteEndpoint.objects.create(route=route, endpoint=endpoint, position=position)
    return route


def make_endpoint(name: str, base_url: str, **fields: Any) -> ModelEndpoint:
    api_key = fields.pop("api_key", "")
    defaults: dict[str, Any] = {
        "upstream_model": f"{name}-model",
        "connect_timeout_s": 1.0,
        "first_byte_timeout_s": 2.0,
        "total_timeout_s": 5.0,
        "max_retries": 0,
        "input_cost_per_1m": 1,
        "output_cost_per_1m": 2,
    }
    endpoint = ModelEndpoint(name=name, base_url=base_url, **{**defaults, **fields})
    endpoint.set_api_key(api_key)
    endpoint.save()
    return endpoint


@pytest.fixture
def alice(transactional_db: None, gateway: Process) -> Client:
    """Alice's service: a key that may use every model."""
    return wait_for_key(gateway, make_client("alice-service"))


@pytest.fixture
def bob(transactional_db: None, gateway: Process) -> Client:
    """Bob's service: a key restricted to the model 'bob-only'."""
    return wait_for_key(gateway, make_client("bob-service", allowed_models=["bob-only"]))


ModelFactory = Callable[..., str]
_model_numbers = itertools.count()  # session-wide: the gateway's metrics outlive a test


@pytest.fixture
def model_with(gateway: Process, fake_upstream: Process, alice: Client) -> ModelFactory:
    """Make a model routed to fake-upstream endpoints given as path modes, e.g.
    model_with("status/500", "") → primary answers 500, fallback answers OK.
    Returns the model name once the gateway can route it."""

    def factory(
        *modes: str,
        model_name: str | None = None,
        semantic: str = "off",
        **endpoint_fields: object,
    ) -> str:
        n = next(_model_numbers)
        name = model_name or f"m{n}"
        endpoints: list[ModelEndpoint] = []
        for i, mode in enumerate(modes):
            prefix = f"/{mode}" if mode else ""
            base_url = (
                mode
                if mode.startswith(("http://", "https://"))
                else (f"{fake_upstream.url}{prefix}/v1")
            )
            endpoints.append(make_endpoint(f"{name}-ep{i}", base_url, **endpoint_fields))
        make_model(name, endpoints, semantic_mode=semantic)
        wait_for_model(gateway, alice, name)
        return name

    return factory


@pytest.fixture
def admin_browser(transactional_db: None, django_user_model: Any) -> BrowserClient:
    """An operator logged in to Django admin."""
    user = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    browser = BrowserClient()
    browser.force_login(user)
    return browser


# --- talking to the gateway --------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(
    url: str,
    *,
    method: str = "GET",
    body: Any = None,
    key: str | None = None,
    headers: dict[str, str] | None = None,
    timeout_s: float = 30,
) -> Reply:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    if data is not None and not request.has_header("Content-type"):
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return Reply(response.status, {k.lower(): v for k, v in response.headers.items()},
                         response.read())  # fmt: skip
    except urllib.error.HTTPError as error:
        return Reply(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read())


def record_for(request_id: str, timeout_s: float = 5.0) -> RequestRecord:
    """The request's record, once the gateway's batch writer has written it."""
    return wait_until(
        lambda: RequestRecord.objects.filter(request_id=request_id).first(), timeout_s=timeout_s
    )


def wait_for_model(gateway: Process, client: Client, model_name: str) -> None:
    """Block until the gateway's in-process registry has picked up a new route."""

    def visible() -> bool:
        reply = http(f"{gateway.url}/v1/models", key=client.key)
        return reply.status == 200 and model_name in {m["id"] for m in reply.json()["data"]}

    wait_until(visible)


def wait_for_key(gateway: Process, client: Client) -> Client:
    """Block until the gateway's in-process registry knows a new key."""
    wait_until(lambda: http(f"{gateway.url}/v1/models", key=client.key).status == 200)
    return client


def upstream_hits(fake_upstream: Process, path: str) -> int:
    return http(f"{fake_upstream.url}/_stats").json().get(path, 0)


def upstream_peak(fake_upstream: Process, path: str) -> int:
    """The most requests the fake upstream had in progress at once on that path."""
    return http(f"{fake_upstream.url}/_peak").json().get(path, 0)
