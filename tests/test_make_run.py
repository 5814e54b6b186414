"""`make run` (scripts/run.sh) as an operator meets it: the first start makes the admin login
and a demo key, later starts print the same key, `make reset-demo` replaces both, secrets are
0600, and a taken port stops it in one line before anything starts.

Each run has a private var/ (BEASTMODE_VAR_DIR: SQLite, secrets, key file) and free ports."""

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import ROOT, free_port, http, wait_until

RUN = ROOT / "scripts" / "run.sh"


@pytest.fixture
def run_env(tmp_path: Path) -> dict[str, str]:
    """An operator's shell (none of the test session's settings), the embedded default (no
    Postgres, Redis or broker), and a var/ of the test's own."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BEASTMODE_", "DJANGO_"))
           and k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")}  # fmt: skip
    env.update(BEASTMODE_VAR_DIR=str(tmp_path / "var"), PORT=str(free_port()),
               DEMO_UPSTREAM_PORT=str(free_port()))  # fmt: skip
    return env


def start(env: dict[str, str], timeout_s: float = 90) -> tuple[str, str]:
    """Run `make run` until it serves; returns the printed key and login, and stops it."""
    process = subprocess.Popen(
        [str(RUN)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        banner = _read_until(process, "service key:", timeout_s)
        key = re.search(r"service key: (\S+)", banner)[1]  # type: ignore[index]
        login = re.search(r"login: (.+)", banner)[1]  # type: ignore[index]
        deadline = time.monotonic() + timeout_s
        url = f"http://127.0.0.1:{env['PORT']}/v1/models"
        while _status(url, key) != 200:  # the printed key works
            assert time.monotonic() < deadline and process.poll() is None, banner
            time.sleep(0.2)
        return key, login
    finally:
        _stop(process, env)


def _read_until(process: subprocess.Popen[str], marker: str, timeout_s: float) -> str:
    assert process.stdout is not None
    deadline, seen = time.monotonic() + timeout_s, ""
    while marker not in seen:
        line = process.stdout.readline()  # the banner comes within seconds, or the run ends
        assert line and time.monotonic() < deadline, f"no {marker!r} in:\n{seen}"
        seen += line
    return seen


def _status(url: str, key: str) -> int:
    try:
        return http(url, key=key, timeout_s=2).status
    except OSError:
        return 0


def _stop(process: subprocess.Popen[str], env: dict[str, str]) -> None:
    """Ctrl-C's end: the script and what it started (the server, the demo upstream) are
    stopped, and their ports free for the next start."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # what outlived the script
    process.wait(timeout=5)
    ports = [int(env["PORT"]), int(env["DEMO_UPSTREAM_PORT"])]
    wait_until(lambda: all(_bindable(port) for port in ports), 15)


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_make_run_keeps_its_login_and_key_and_reset_demo_replaces_them(
    run_env: dict[str, str],
) -> None:
    var = Path(run_env["BEASTMODE_VAR_DIR"])

    first_key, first_login = start(run_env)
    second_key, second_login = start(run_env)

    assert first_key.startswith("bm-") and second_key == first_key
    password = re.fullmatch(r"admin / (\S+)", first_login)[1]  # type: ignore[index]
    assert second_login == "admin, password unchanged (`make reset-demo` sets a new one)"
    for secret in ("secret_key", "encryption.key", "demo-service-key"):
        assert (var / secret).stat().st_mode & 0o777 == 0o600, secret
    assert not any(password.encode() in f.read_bytes() for f in var.rglob("*") if f.is_file())

    reset = subprocess.run([str(RUN), "--reset-demo"], cwd=ROOT, env=run_env, timeout=90,
                           capture_output=True, text=True, check=True)  # fmt: skip
    new_password = re.search(r"admin login: admin / (\S+)", reset.stdout)[1]  # type: ignore[index]
    new_key = re.search(r"service key: (\S+)", reset.stdout)[1]  # type: ignore[index]
    assert new_password != password and new_key != first_key

    third_key, third_login = start(run_env)
    assert third_key == new_key and "unchanged" in third_login
    assert (var / "demo-service-key").stat().st_mode & 0o777 == 0o600


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize("variable", ["DEMO_UPSTREAM_PORT", "PORT"])
def test_a_taken_port_stops_make_run_in_one_line_before_anything_starts(
    run_env: dict[str, str], taken_port: int, variable: str
) -> None:
    run_env[variable] = str(taken_port)

    done = subprocess.run([str(RUN)], cwd=ROOT, env=run_env, timeout=30, capture_output=True,
                          text=True, start_new_session=True)  # fmt: skip

    assert done.returncode != 0
    assert done.stdout == ""
    assert done.stderr == f"port {taken_port} is in use: set {variable}=… to use another\n"
    assert not Path(run_env["BEASTMODE_VAR_DIR"]).exists()  # no secrets, no database, no key
    other = "PORT" if variable == "DEMO_UPSTREAM_PORT" else "DEMO_UPSTREAM_PORT"
    with pytest.raises(OSError):  # and nothing serves on the other port
        socket.create_connection(("127.0.0.1", int(run_env[other])), timeout=0.5).close()
