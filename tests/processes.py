"""Real processes on loopback for the tests: the gateway under daphne, the fake upstream,
and how tests talk to them and wait for them."""

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.conf import settings
from django.db import connection

from devtools.servers import free_port as free_port  # (tests import it from here)

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
_nodes = itertools.count()  # metrics directories handed out this session


def wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = 45) -> None:
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
        process.popen.wait(timeout=10)


def server_env() -> dict[str, str]:
    """Environment for a gateway process that shares this session's test database. Each
    environment is a node of its own: its metrics directory is its own (processes started
    with the same environment share it), so no gateway counts another's requests."""
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "beastmode.settings_test"
    # (the pid too: pytest sessions run side by side in one checkout share var/)
    node = f"metrics-node-{os.getpid()}-{next(_nodes)}"
    env["BEASTMODE_METRICS_DIR"] = str(settings.VAR_DIR / node)
    settings_dict = connection.settings_dict
    if settings_dict["ENGINE"].endswith("postgresql"):
        env["DATABASE_URL"] = (
            f"postgres://{settings_dict['USER']}@{settings_dict['HOST']}:"
            f"{settings_dict['PORT'] or 5432}/{settings_dict['NAME']}"
        )
    else:
        env["BEASTMODE_TEST_SQLITE_NAME"] = str(settings_dict["NAME"])
    return env


def start_gateway(
    name: str,
    env: dict[str, str] | None = None,
    daphne_args: tuple[str, ...] = (),
    server: str = "daphne",
) -> Process:
    """A BeastMode process under daphne (the default server) or uvicorn on a free port."""
    port = free_port()
    args = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), *daphne_args,
            "beastmode.asgi:application"]  # fmt: skip
    if server == "uvicorn":  # as docs/operations.md runs it
        args = [sys.executable, "-m", "uvicorn", "beastmode.asgi:application", "--host",
                "127.0.0.1", "--port", str(port), "--timeout-graceful-shutdown", "19"]  # fmt: skip
    return start_process(args, port, name, env or server_env())


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


def upstream_hits(fake_upstream: Process, path: str) -> int:
    return http(f"{fake_upstream.url}/_stats").json().get(path, 0)


def upstream_peak(fake_upstream: Process, path: str) -> int:
    """The most requests the fake upstream had in progress at once on that path."""
    return http(f"{fake_upstream.url}/_peak").json().get(path, 0)
