"""The processes bench/gateway.py starts and stops: the fake upstream, the bare ASGI app
and BeastMode under daphne or uvicorn, and LiteLLM's proxy in its own venv.

Every process runs in its own session on a loopback port picked here, with its output in
a log file of the run's work dir, and is stopped by its process group, so nothing the
benchmark started outlives it (also on Ctrl-C / SIGTERM).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from bench.gateway_endpoints import (
    HOST,
    LITELLM_PIN,
    LITELLM_VENV,
    MODEL,
    VENV_BIN,
    CheckResult,
    Target,
    check_target,
)
from bench.gateway_load import Measurement


class ProcessGroup:
    """Subprocesses started by this run; each in its own session, stopped by its group id."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, IO[bytes]] = {}

    def start(
        self, name: str, argv: Sequence[str], cwd: Path, env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._procs[name] = proc
        self._logs[name] = log
        return proc

    def stop(self, name: str) -> None:
        proc = self._procs.pop(name, None)
        log = self._logs.pop(name, None)
        if proc is not None and proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=8)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=5)
        if log is not None:
            log.close()

    def stop_all(self) -> None:
        for name in list(self._procs):
            self.stop(name)

    def exited(self, name: str) -> int | None:
        proc = self._procs.get(name)
        return None if proc is None else proc.poll()

    def log_tail(self, name: str, lines: int = 25) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        text = path.read_text(errors="replace").splitlines()
        return "\n".join("    | " + line for line in text[-lines:])


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)  # the child leads its own session, so its group is its pid


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_ready(procs: ProcessGroup, name: str, target: Target, timeout: float) -> CheckResult:
    """Poll with real requests until the target answers, its process dies, or time runs out."""
    deadline = time.monotonic() + timeout
    last = CheckResult(False, "not started")
    while time.monotonic() < deadline:
        code = procs.exited(name)
        if code is not None:
            return CheckResult(False, f"process exited with code {code}")
        last = check_target(target, "json", timeout=5.0)
        if last.ok:
            return last
        if last.detail.startswith("HTTP"):  # it answers, just not with a 200: no use waiting
            return last
        time.sleep(0.2)
    return CheckResult(False, f"not ready after {timeout:.0f} s ({last.detail})")


@dataclass
class Run:
    args: argparse.Namespace
    procs: ProcessGroup
    work_dir: Path
    results: list[Measurement] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    limited_key: str | None = None  # --limited-key

    def notice(self, text: str) -> None:
        self.notices.append(text)
        print(f"NOTICE: {text}", flush=True)


def server_argv(server: str, app: str, port: int) -> list[str]:
    """The same flags for the bare app and the gateway: one process, no access log."""
    if server == "daphne":
        return [str(VENV_BIN / "daphne"), "-v", "0", "-b", HOST, "-p", str(port), app]
    return [
        str(VENV_BIN / "uvicorn"),
        app,
        "--host",
        HOST,
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]


def start_upstream(run: Run) -> Target:
    port = free_port()
    argv = [sys.executable, "-m", run.args.upstream_module, "--port", str(port)]
    run.procs.start("upstream", argv, run.args.project_dir, dict(os.environ))
    target = Target("direct", port, "sk-direct-upstream-0000000000000000")
    ready = wait_ready(run.procs, "upstream", target, timeout=30)
    if not ready.ok:
        print(run.procs.log_tail("upstream"))
        sys.exit(f"fake upstream ({run.args.upstream_module}) did not come up: {ready.detail}")
    return target


def gateway_env(run: Run) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("BEASTMODE_SECRET_KEY", "bench-" + secrets.token_urlsafe(32))
    # A Fernet key is 32 random bytes, urlsafe-base64 encoded.
    env.setdefault("BEASTMODE_ENCRYPTION_KEY", base64.urlsafe_b64encode(os.urandom(32)).decode())
    if not env.get("DATABASE_URL"):
        var_dir = run.work_dir / "beastmode-var"
        var_dir.mkdir(exist_ok=True)
        env["BEASTMODE_VAR_DIR"] = str(var_dir)
    return env


def create_limited_key(run: Run, env: dict[str, str]) -> str | None:
    """A key with every limit, each far above what the run sends (nothing is refused)."""
    argv = [sys.executable, "manage.py", "create_service_key", "bench-limited",
            "--rpm", "1000000000", "--tpm", "1000000000000", "--max-parallel", "100000",
            "--budget", "10000000"]  # fmt: skip
    done = subprocess.run(argv, cwd=run.args.project_dir, env=env, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    if done.returncode != 0 or not done.stdout.strip():
        run.notice(f"create_service_key failed: {done.stderr.strip()[-300:]}")
        return None
    return done.stdout.strip().splitlines()[-1]


def prepare_gateway(run: Run, upstream: Target, env: dict[str, str]) -> str | None:
    """migrate + load_demo; the service key, or None (with a notice) if the gateway can't run."""
    project = run.args.project_dir
    if not (project / "beastmode" / "asgi.py").exists():
        run.notice(f"{project}/beastmode/asgi.py does not exist yet: BeastMode is skipped")
        return None
    manage = [sys.executable, "manage.py"]
    steps = [
        [*manage, "migrate", "--noinput"],
        # pass-through and exact hits only: no semantic lookup on the misses
        [*manage, "load_demo", "--upstream-url", f"http://{HOST}:{upstream.port}/v1",
         "--semantic", "off"],
    ]  # fmt: skip
    output = ""
    for argv in steps:
        done = subprocess.run(
            argv, cwd=project, env=env, capture_output=True, text=True, timeout=300, check=False
        )
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
            run.notice(
                f"`{' '.join(argv[1:3])}` failed (exit {done.returncode}): BeastMode is skipped"
            )
            print("\n".join("    | " + line for line in tail))
            return None
        output = done.stdout
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if not lines:
        run.notice("load_demo printed no service key: BeastMode is skipped")
        return None
    return lines[-1]


def litellm_config(upstream: Target, master_key: str) -> str:
    # JSON is valid YAML; kept minimal and explicit for fairness: one deployment, no cache,
    # no callbacks, no database (so no spend logs / key checks against a DB).
    config = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": "openai/gpt-4o-mini",
                    "api_base": f"http://{HOST}:{upstream.port}/v1",
                    "api_key": "sk-fake-upstream",
                },
            }
        ],
        "litellm_settings": {
            "set_verbose": False,
            "json_logs": False,
            "turn_off_message_logging": True,
            "callbacks": [],
            "success_callback": [],
            "failure_callback": [],
            "cache": False,
        },
        "general_settings": {
            "master_key": master_key,
            "disable_spend_logs": True,
        },
    }
    return json.dumps(config, indent=2)


def start_litellm(run: Run, upstream: Target) -> Target | None:
    cli = LITELLM_VENV / "bin" / "litellm"
    if not cli.exists():
        run.notice(
            f"{LITELLM_VENV} not found: LiteLLM is skipped "
            "(create it: python3.11 -m venv .bench-venv-litellm && "
            f".bench-venv-litellm/bin/pip install 'litellm[proxy]=={LITELLM_PIN}')"
        )
        return None
    master_key = "sk-bench-" + secrets.token_hex(12)
    config = run.work_dir / "litellm-config.yaml"
    config.write_text(litellm_config(upstream, master_key))
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_URL", "REDIS_", "LITELLM_"))
    }
    env.update(
        {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the cost map at start-up
            "LITELLM_LOG": "ERROR",
            "LITELLM_MODE": "PRODUCTION",  # do not load a .env file
            "NO_DOCS": "True",
        }
    )
    argv = [
        str(cli),
        "--config",
        str(config),
        "--host",
        HOST,
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    run.procs.start("litellm", argv, run.work_dir, env)
    target = Target("litellm", port, master_key)
    ready = wait_ready(run.procs, "litellm", target, timeout=120)
    if not ready.ok:
        run.notice(f"LiteLLM did not come up ({ready.detail}): skipped")
        print(run.procs.log_tail("litellm"))
        run.procs.stop("litellm")
        return None
    return target


def litellm_version() -> str:
    meta = list((LITELLM_VENV / "lib").glob("python3*/site-packages/litellm-*.dist-info"))
    return (
        meta[0].name.removeprefix("litellm-").removesuffix(".dist-info")
        if meta
        else "not installed"
    )
