"""Registry propagation across processes: how long a service-key change, revocation and
deletion take to be honoured by every gateway process, at 100k service keys.

Rerun (from the repository root, with Postgres; ~1 minute):

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bm_registry \\
    REDIS_URL=redis://127.0.0.1:6379/10 .venv/bin/python bench/cluster_registry.py

What it does: creates a private database next to the one in DATABASE_URL (its name plus
``_cluster_bench``; dropped at the end), migrates it, seeds ``--keys`` service keys and one
model, starts two gateway processes under daphne with the default refresh interval, then
for each of ``--rounds`` rounds, through the ORM as admin would: changes one key's allowed
models, revokes one key and deletes one key, timing from just before each write until each
process honours it (polled every few ms with the key: ``GET /v1/models`` lists the model or
not, a revoked or deleted key gets 401). The per-process reload cost comes from the
gateways' own log line (``registry reloaded ...: N key rows read in X ms``); a full read of
every key is timed in this process for comparison.

``run()`` does the work in a child process (Django is set up there, not in the caller) and
returns flat figures; ``main()`` prints them.
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import http.client
import json
import os
import random
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
MODEL = "registry-bench"
POLL_S = 0.005
HONOUR_TIMEOUT_S = 10.0
RELOAD_LINE = re.compile(r"registry reloaded \(version \d+\): (\d+) key rows read in ([\d.]+) ms")


def run(*, keys: int = 100_000, rounds: int = 5) -> dict[str, float]:
    """Measure in a child process (see the module docstring); DATABASE_URL must name a
    Postgres database whose server may get a private one. Returns flat figures in ms."""
    argv = [sys.executable, str(Path(__file__)), "--child", "--keys", str(keys),
            "--rounds", str(rounds)]  # fmt: skip
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"cluster_registry failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--keys", type=int, default=100_000, help="service keys seeded")
    parser.add_argument("--rounds", type=int, default=5, help="changes of each kind")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_measure(keys=args.keys, rounds=args.rounds)))
        return 0
    figures = run(keys=args.keys, rounds=args.rounds)
    width = max(len(name) for name in figures)
    for name, value in figures.items():
        print(f"{name:<{width}}  {value:10.1f}")
    return 0


# --- the child: Django against the private database ----------------------------------


def _measure(*, keys: int, rounds: int) -> dict[str, float]:
    base_url = os.environ.get("DATABASE_URL", "")
    if not base_url.startswith(("postgres://", "postgresql://")):
        raise SystemExit("set DATABASE_URL to a Postgres database (its server gets a private one)")
    parts = urlsplit(base_url)
    name = parts.path.lstrip("/") + "_cluster_bench"
    admin_dsn = parts._replace(path="/postgres", scheme="postgresql").geturl()
    env = _server_env(parts._replace(path=f"/{name}", scheme="postgres").geturl())
    _recreate_database(admin_dsn, name)
    work_dir = Path(tempfile.mkdtemp(prefix="bench-cluster-registry-"))
    try:
        _setup_django(env)
        raw_keys = _seed(keys, extra=1 + 2 * rounds)
        full_ms = _time_full_read()
        with _gateways(env, work_dir, count=2) as ports:
            for port in ports:
                _wait(functools.partial(_lists(raw_keys[0], [MODEL]), port), 120)
            figures = _rounds(ports, raw_keys, rounds)
            logs = [(work_dir / f"gateway-{port}.log").read_text() for port in ports]
    finally:
        from django.db import connection

        connection.close()
        _drop_database(admin_dsn, name)
    from django.conf import settings

    reloads = [m for log in logs for m in RELOAD_LINE.findall(log)]
    # Each write changes one key: a reload that read more was a full one.
    incremental = [float(ms) for rows, ms in reloads if int(rows) <= min(10, keys // 2)]
    figures.update(
        {
            "keys": float(keys),
            "processes": 2.0,
            "refresh_interval_ms": settings.REGISTRY_REFRESH_S * 1000,
            "reload_incremental_p50_ms": statistics.median(incremental) if incremental else -1,
            "reload_incremental_max_ms": max(incremental) if incremental else -1,
            "reloads_incremental": float(len(incremental)),
            "reloads_full": float(len(reloads) - len(incremental)),
            "reload_full_ms": full_ms,
        }
    )
    return figures


def _server_env(database_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "beastmode.settings",
            "DATABASE_URL": database_url,
            "BEASTMODE_VAR_DIR": tempfile.mkdtemp(prefix="bench-cluster-registry-var-"),
            "BEASTMODE_SECRET_KEY": "bench-" + secrets.token_urlsafe(32),
            "BEASTMODE_ENCRYPTION_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
            "LOG_LEVEL": "INFO",  # the gateways' reload lines
        }
    )
    return env


def _recreate_database(admin_dsn: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def _drop_database(admin_dsn: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _setup_django(env: dict[str, str]) -> None:
    import django
    from django.core.management import call_command

    os.environ.update(env)
    sys.path.insert(0, str(REPO))
    django.setup()
    call_command("migrate", verbosity=0)


def _seed(count: int, *, extra: int) -> list[str]:
    """`count` keys in bulk and one model; returns the raw secrets of the first `extra`
    keys (the ones the rounds change, revoke and delete)."""
    from routing.models import ModelEndpoint, Route, RouteEndpoint, ServiceKey

    raw_keys = ["bm-" + secrets.token_urlsafe(32) for _ in range(count)]
    rows = [
        ServiceKey(
            name=f"bench-{n}", prefix=raw[:10], key_hash=hashlib.sha256(raw.encode()).hexdigest()
        )
        for n, raw in enumerate(raw_keys)
    ]
    ServiceKey.objects.bulk_create(rows, batch_size=5000)
    endpoint = ModelEndpoint.objects.create(
        name="registry-bench-ep", base_url="http://127.0.0.1:9/v1", upstream_model="never-called"
    )
    route = Route.objects.create(model_name=MODEL)
    RouteEndpoint.objects.create(route=route, endpoint=endpoint)
    return raw_keys[:extra]


def _time_full_read() -> float:
    from routing import registry

    started = time.perf_counter()
    registry.load_snapshot()
    return (time.perf_counter() - started) * 1000


def _rounds(ports: list[int], raw_keys: list[str], rounds: int) -> dict[str, float]:
    from routing.models import ServiceKey
    from routing.service_keys import hash_key

    def row(raw: str) -> ServiceKey:
        return ServiceKey.objects.get(key_hash=hash_key(raw))

    changed = row(raw_keys[0])
    times: dict[str, list[float]] = {"change": [], "revoke": [], "delete": []}
    for n in range(rounds):
        allowed = ["elsewhere"] if n % 2 == 0 else []
        expected = [] if allowed else [MODEL]
        changed.allowed_models = allowed
        times["change"] += _honoured(ports, changed.save, _lists(raw_keys[0], expected))
        revoked, deleted = raw_keys[1 + 2 * n], raw_keys[2 + 2 * n]
        times["revoke"] += _honoured(ports, row(revoked).revoke, _refuses(revoked))
        times["delete"] += _honoured(ports, row(deleted).delete, _refuses(deleted))
    figures = {}
    for kind, values in times.items():
        figures[f"{kind}_p50_ms"] = statistics.median(values)
        figures[f"{kind}_max_ms"] = max(values)
    figures["honoured_max_ms"] = max(max(values) for values in times.values())
    return figures


def _honoured(
    ports: list[int], write: Callable[[], Any], honours: Callable[[int], bool]
) -> list[float]:
    """Milliseconds from just before `write` until each process `honours` it."""
    from django.conf import settings

    results: dict[int, float] = {}

    def poll(port: int, started: float) -> None:
        while time.perf_counter() - started < HONOUR_TIMEOUT_S:
            if honours(port):
                results[port] = (time.perf_counter() - started) * 1000
                return
            time.sleep(POLL_S)

    # Writes at a random phase of the refreshers' ticks: right after the last change was
    # honoured (just after a tick) every write would wait a whole interval.
    time.sleep(random.uniform(0, settings.REGISTRY_REFRESH_S))
    started = time.perf_counter()
    write()
    threads = [threading.Thread(target=poll, args=(port, started)) for port in ports]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if len(results) != len(ports):
        raise RuntimeError(f"not honoured within {HONOUR_TIMEOUT_S}s by every process: {results}")
    return [results[port] for port in ports]


def _lists(raw_key: str, models: list[str]) -> Callable[[int], bool]:
    """Whether a process lists exactly `models` for the key."""
    return lambda port: _models(port, raw_key) == models


def _refuses(raw_key: str) -> Callable[[int], bool]:
    return lambda port: _status(port, raw_key) == 401


def _request(port: int, raw_key: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("GET", "/v1/models", headers={"Authorization": f"Bearer {raw_key}"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _status(port: int, raw_key: str) -> int:
    return _request(port, raw_key)[0]


def _models(port: int, raw_key: str) -> list[str] | None:
    status, body = _request(port, raw_key)
    return [model["id"] for model in json.loads(body)["data"]] if status == 200 else None


def _wait(check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with suppress(OSError):
            if check():
                return
        time.sleep(0.1)
    raise RuntimeError(f"not ready within {timeout_s}s")


@contextmanager
def _gateways(env: dict[str, str], work_dir: Path, *, count: int) -> Iterator[list[int]]:
    """`count` gateway processes under daphne, each in its own session, stopped on exit."""
    started: list[subprocess.Popen[bytes]] = []
    ports = []
    try:
        for _ in range(count):
            port = _free_port()
            argv = [sys.executable, "-m", "daphne", "-b", HOST, "-p", str(port),
                    "beastmode.asgi:application"]  # fmt: skip
            with (work_dir / f"gateway-{port}.log").open("wb") as log:  # the child keeps a copy
                started.append(
                    subprocess.Popen(
                        argv,
                        cwd=REPO,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            ports.append(port)
        yield ports
    finally:
        for process in started:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in started:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    sys.exit(main())
