"""Shared by the parts of bench/cache.py: the report, the targets, HTTP and process helpers.

The part modules (bench/cache_http.py, cache_memory.py, cache_warming.py, cache_semantic.py)
record their results in a Report and start gateways, post requests and run manage.py the same
way; bench/cache.py prints the report. Imported as ``bench.cache_common`` once bench/cache.py
has put the repository root first on sys.path (bench/cache.py would shadow the ``cache`` app).
"""

from __future__ import annotations

import http.client
import json
import math
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.gateway import (
    CHAT_PATH,
    HOST,
    REPO,
    Run,
    Target,
    free_port,
    server_argv,
    wait_ready,
)

GATEWAY_APP = "beastmode.asgi:application"
SEMANTIC_MODEL = "demo-semantic"
SLOW_MODEL = "demo-slow"
SLOW_DELAY_MS = 300

# Targets from the issue.
TARGET_HIT_VS_BARE = 0.50
TARGET_LOOKUP_P50_MS = 3.0
TARGET_MILLION_P99_MS = 1.0
TARGET_RSS_MIB = 250.0


@dataclass
class Row:
    target: str
    measured: str
    verdict: str


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    def add(self, target: str, measured: str, verdict: str) -> None:
        self.rows.append(Row(target, measured, verdict))

    def notice(self, text: str) -> None:
        self.notices.append(text)
        print(f"NOTICE: {text}", flush=True)


# --------------------------------------------------------------------------- helpers


def pct(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def p50_p99(values_ms: Sequence[float]) -> str:
    return f"P50 {pct(values_ms, 50):.3f} / P99 {pct(values_ms, 99):.3f} ms"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


@dataclass
class Reply:
    status: int
    cache: str | None
    tier: str | None
    body: bytes
    seconds: float


def post(port: int, api_key: str, body: bytes, timeout: float = 30.0) -> Reply:
    """One request on a new connection, timed from connect to the last byte."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(
            "POST",
            CHAT_PATH,
            body=body,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"},
        )
        response = conn.getresponse()
        payload = response.read()
        return Reply(
            response.status,
            response.getheader("x-beastmode-cache"),
            response.getheader("x-beastmode-cache-tier"),
            payload,
            time.perf_counter() - started,
        )
    finally:
        conn.close()


def chat_body(model: str, text: str) -> bytes:
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    return json.dumps(body, separators=(",", ":")).encode()


def manage(env: dict[str, str], *argv: str, timeout: float = 300) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip()[-1500:]
        raise RuntimeError(f"manage.py {' '.join(argv[:2])} failed ({done.returncode}): {tail}")
    return done.stdout


# --------------------------------------------------------------------------- services


@dataclass(frozen=True)
class Gateway(Target):
    pid: int = 0  # the server process itself: bin/daphne runs python directly


def start_gateway(run: Run, name: str, server: str, key: str, env: dict[str, str]) -> Gateway:
    port = free_port()
    proc = run.procs.start(name, server_argv(server, GATEWAY_APP, port), REPO, env)
    gateway = Gateway(name, port, key, pid=proc.pid)
    ready = wait_ready(run.procs, name, gateway, timeout=90)
    if not ready.ok:
        print(run.procs.log_tail(name))
        raise RuntimeError(f"{name} did not come up: {ready.detail[:300]}")
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    if server not in cmdline:
        raise RuntimeError(f"pid {proc.pid} is not the {server} server: {cmdline[:200]}")
    return gateway


def write_models_yaml(run: Run, upstream: Target) -> Path:
    base = f"http://{HOST}:{upstream.port}"
    text = f"""models:
  - name: {SEMANTIC_MODEL}
    cache: {{semantic: "on"}}
    endpoints:
      - name: bench-semantic-upstream
        provider: openai
        base_url: {base}/v1
        model: demo-echo
        timeout_s: 30
  - name: {SLOW_MODEL}
    endpoints:
      - name: bench-slow-upstream
        provider: openai
        base_url: {base}/delay/{SLOW_DELAY_MS}/v1
        model: demo-echo
        timeout_s: 30
"""
    path = run.work_dir / "bench-models.yaml"
    path.write_text(text)
    return path
