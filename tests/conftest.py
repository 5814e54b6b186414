"""Shared fixtures: the gateway and the fake upstream as real processes, the personas.
Helpers live in tests/processes.py (processes, HTTP, waiting) and tests/personas.py.

The gateway under test runs as a real daphne process against the test database,
and upstreams are the fake OpenAI server (devtools/fake_upstream.py) in its own
process, so timeouts, retries, pooling and records are exercised for real.
"""

import itertools
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.conf import settings
from django.core.management import CommandError
from django.db import OperationalError, connection
from django.test import Client as BrowserClient
from django.test import TransactionTestCase

from routing.models import ModelEndpoint
from tests.personas import (
    Client,
    ModelFactory,
    make_client,
    make_endpoint,
    make_model,
    wait_for_key,
    wait_for_model,
)
from tests.processes import (
    Process,
    free_port,
    server_env,
    start_gateway,
    start_process,
    stop_process,
)


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


@pytest.fixture(scope="session")
def celery_worker(django_db_setup: None) -> Iterator[Process | None]:
    """A real Celery worker when a broker is configured; embedded runs use in-process threads
    (None)."""
    if settings.CELERY_TASK_ALWAYS_EAGER:
        yield None
        return
    health_port = free_port()  # the worker does not listen; a tiny server tells us it is up
    process = start_process(
        ["bash", "-c",
         f"{sys.executable} -m celery -A beastmode worker --pool=solo --concurrency=1 "
         f"--loglevel=INFO --without-gossip --without-mingle & "
         f"{sys.executable} -m http.server {health_port} --bind 127.0.0.1; wait"],
        health_port,
        "celery",
        server_env(),
    )  # fmt: skip
    yield process
    stop_process(process)


@pytest.fixture(scope="session")
def gateway(django_db_setup: None, django_db_blocker: Any) -> Iterator[Process]:
    """BeastMode itself, shared by the session."""
    process = start_gateway("gateway")
    yield process
    stop_process(process)


# --- personas and factories -------------------------------------------------------


@pytest.fixture
def alice(transactional_db: None, gateway: Process) -> Client:
    """Alice's service: a key that may use every model."""
    return wait_for_key(gateway, make_client("alice-service"))


@pytest.fixture
def bob(transactional_db: None, gateway: Process) -> Client:
    """Bob's service: a key restricted to the model 'bob-only'."""
    return wait_for_key(gateway, make_client("bob-service", allowed_models=["bob-only"]))


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
