"""Cluster benchmark: BeastMode as several processes and nodes on one Postgres and one Redis.

Rerun (from the repository root; ~4 minutes with the defaults, ~1½ with --quick):

    .venv/bin/python bench/cluster.py
    .venv/bin/python bench/cluster.py --quick
    .venv/bin/python bench/cluster.py --parts flights,breaker --bursts 50

Everything runs on loopback and is started and stopped by the script: a private PostgreSQL
and Redis (devtools/servers.py), the fake upstream, the gateway processes and a Celery
worker. Parts (`--parts`, all by default):

- throughput: `uvicorn --workers N` for N = 1, 2, 4, each loaded by wrk at 16 connections
  with new requests (pass-through: a miss, an upstream call, a record) and with one
  repeated request (exact hits); req/s and the ratio to one process. The machine's cores
  are shared by the workers, wrk and the upstream, so the ratio is capped by them.
- flights: two daphne nodes and a Celery worker; bursts of 20 identical new requests (8
  to each node, 4 as async jobs for the worker) against an upstream that takes 200 ms;
  upstream calls per burst (1 is the target) and the burst's slowest answer.
- breaker: an endpoint that fails; node A opens its circuit; how long until node B's
  /metrics shows it open (the target is within a second).
- registry: bench/cluster_registry.py (a changed, a revoked and a deleted key at 100k
  service keys, two gateway processes: time until both honour it).
- index: bench/cluster_index.py (the semantic index at --index-entries entries).

The machine is shared and noisy: compare ratios within one run, not figures across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.gateway_endpoints import HOST, REPO, VENV_BIN, Target
from bench.gateway_load import Measurement, ensure_wrk, measure
from bench.gateway_processes import (
    ProcessGroup,
    Run,
    free_port,
    gateway_env,
    prepare_gateway,
    start_upstream,
    wait_ready,
)
from devtools.servers import private_postgres, private_redis

PARTS = ("throughput", "flights", "breaker", "registry", "index")
EXTRA_MODELS = """
models:
  - name: slow
    endpoints:
      - {{name: slow-ep, provider: openai, base_url: "{upstream}/delay/200/v1", model: slow}}
  - name: failing
    endpoints:
      - {{name: failing-ep, provider: openai, base_url: "{upstream}/status/500/v1",
          model: failing, max_retries: 0}}
"""


def main() -> None:
    args = parse_args()
    ensure_wrk()
    work_dir = Path(tempfile.mkdtemp(prefix="bm-cluster-bench-"))
    procs = ProcessGroup(work_dir)
    results: dict[str, float] = {}
    try:
        with private_redis() as redis, private_postgres() as postgres:
            env = {**os.environ, "DATABASE_URL": postgres.url, "REDIS_URL": redis.url}
            env.pop("CELERY_BROKER_URL", None)
            os.environ.update(env)  # (gateway_env starts from os.environ)
            run = Run(args=args, procs=procs, work_dir=work_dir)
            env = gateway_env(run)
            upstream = start_upstream(run)
            key = prepare_gateway(run, upstream, env)
            if key is None:
                sys.exit("the gateway could not be prepared")
            import_extra_models(env, upstream, work_dir)
            if "throughput" in args.parts:
                results |= throughput(run, env, key)
            if "flights" in args.parts:
                results |= flights(run, env, key, upstream, args.bursts)
            if "breaker" in args.parts:
                results |= breaker_propagation(run, env, key)
            procs.stop_all()
            if "registry" in args.parts:
                from bench import cluster_registry

                results |= cluster_registry.run(keys=args.registry_keys, rounds=args.rounds)
            if "index" in args.parts:
                from bench import cluster_index

                results |= cluster_index.run(args.index_entries)
    finally:
        procs.stop_all()
    report(results, args)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"some of {','.join(PARTS)}")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk point")
    parser.add_argument("--bursts", type=int, default=20, help="coalesced bursts to send")
    parser.add_argument("--registry-keys", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5, help="registry changes to time")
    parser.add_argument("--index-entries", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true",
                        help="3 s points, 5 bursts, 20k keys and entries, 2 rounds")  # fmt: skip
    parser.add_argument("--json-out", type=Path, help="also write the figures here")
    args = parser.parse_args()
    args.parts = set(args.parts.split(","))
    if unknown := args.parts - set(PARTS):
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    if args.quick:
        args.duration, args.bursts, args.index_entries = 3.0, 5, 20_000
        args.registry_keys, args.rounds = 20_000, 2
    # What bench/gateway_processes.py and gateway_load.py expect of a run's arguments.
    args.project_dir, args.upstream_module = REPO, "devtools.fake_upstream"
    args.warmup, args.body = 1.0, "unique"
    return args


def import_extra_models(env: dict[str, str], upstream: Target, work_dir: Path) -> None:
    path = work_dir / "models.yaml"
    path.write_text(EXTRA_MODELS.format(upstream=f"http://{HOST}:{upstream.port}"))
    manage(env, "import_models", str(path))


def manage(env: dict[str, str], *command: str) -> None:
    subprocess.run([sys.executable, "manage.py", *command], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=120)  # fmt: skip


def start_node(run: Run, env: dict[str, str], name: str, workers: int = 1) -> Target:
    """A gateway under uvicorn with `workers` processes (uvicorn's own --workers)."""
    port = free_port()
    argv = [str(VENV_BIN / "uvicorn"), "beastmode.asgi:application", "--host", HOST,
            "--port", str(port), "--workers", str(workers), "--no-access-log",
            "--log-level", "warning"]  # fmt: skip
    run.procs.start(name, argv, REPO, env)
    return ready(run, name, port, env)


def start_daphne(run: Run, env: dict[str, str], name: str) -> Target:
    port = free_port()
    argv = [str(VENV_BIN / "daphne"), "-v", "0", "-b", HOST, "-p", str(port),
            "beastmode.asgi:application"]  # fmt: skip
    run.procs.start(name, argv, REPO, env)
    return ready(run, name, port, env)


def ready(run: Run, name: str, port: int, env: dict[str, str]) -> Target:
    key = env["BENCH_SERVICE_KEY"]
    target = Target(name, port, key)
    checked = wait_ready(run.procs, name, target, timeout=60)
    if not checked.ok:
        print(run.procs.log_tail(name))
        sys.exit(f"{name} did not come up: {checked.detail}")
    return target


# --- parts -------------------------------------------------------------------------


def throughput(run: Run, env: dict[str, str], key: str) -> dict[str, float]:
    print("throughput: uvicorn --workers N, wrk at 16 connections", flush=True)
    env = {**env, "BENCH_SERVICE_KEY": key}
    figures: dict[str, float] = {}
    for workers in (1, 2, 4):
        node = start_node(run, env, f"uvicorn-{workers}", workers)
        for body in ("unique", "same"):
            run.args.body = body
            m: Measurement = measure(f"{workers}w", "uvicorn", node, "json", 16, run.args,
                                     run.work_dir)  # fmt: skip
            kind = "pass_through" if body == "unique" else "hits"
            figures[f"{kind}_rps_{workers}_workers"] = round(m.rps)
            figures[f"{kind}_p50_ms_{workers}_workers"] = round(m.p50_ms, 2)
        run.procs.stop(f"uvicorn-{workers}")
    run.args.body = "unique"
    for kind in ("pass_through", "hits"):
        for workers in (2, 4):
            ratio = figures[f"{kind}_rps_{workers}_workers"] / figures[f"{kind}_rps_1_workers"]
            figures[f"{kind}_ratio_{workers}_to_1"] = round(ratio, 2)
    return figures


def flights(
    run: Run, env: dict[str, str], key: str, upstream: Target, bursts: int
) -> dict[str, float]:
    print(f"flights: {bursts} bursts of 20 identical requests over 2 nodes + a worker",
          flush=True)  # fmt: skip
    env = {**env, "BENCH_SERVICE_KEY": key}
    nodes = [start_daphne(run, env, "node-a"), start_daphne(run, env, "node-b")]
    worker = [str(VENV_BIN / "celery"), "-A", "beastmode", "worker", "--concurrency", "4",
              "--loglevel", "warning", "--without-heartbeat", "--without-mingle"]  # fmt: skip
    run.procs.start("worker", worker, REPO, env)
    calls, slowest = [], []
    for burst in range(bursts + 1):  # the first one warms up (connections, the worker)
        before = _upstream_calls(upstream)
        started = time.monotonic()
        text = f"burst {burst} {os.urandom(4).hex()}"
        sends = [(node, text, is_job) for node in nodes for is_job in [False] * 8 + [True] * 2]
        with ThreadPoolExecutor(max_workers=len(sends)) as pool:
            list(pool.map(lambda send: _ask_and_wait(key, *send), sends))
        if burst:
            slowest.append(time.monotonic() - started)
            calls.append(_upstream_calls(upstream) - before)
    for name in ("node-a", "node-b", "worker"):
        run.procs.stop(name)
    return {
        "flight_upstream_calls_per_burst": round(sum(calls) / len(calls), 2),
        "flight_bursts_with_more_than_one_call": sum(1 for c in calls if c > 1),
        "flight_slowest_answer_ms_p50": round(sorted(slowest)[len(slowest) // 2] * 1000),
    }


def breaker_propagation(run: Run, env: dict[str, str], key: str) -> dict[str, float]:
    print("breaker: a circuit opened on node A, seen on node B", flush=True)
    env = {**env, "BENCH_SERVICE_KEY": key, "BEASTMODE_BREAKER_COOLDOWN_S": "60"}
    a, b = start_daphne(run, env, "breaker-a"), start_daphne(run, env, "breaker-b")
    opened = None
    for _ in range(20):  # until A's circuit opens (its failure threshold)
        _post(a, key, {"model": "failing", "messages": [{"role": "user", "content": "x"}]})
        if _circuit_state(a, "failing-ep") == 2:
            opened = time.monotonic()
            break
    if opened is None:
        sys.exit("node A never opened its circuit")
    while _circuit_state(b, "failing-ep") != 2:
        if time.monotonic() - opened > 10:
            sys.exit("node B never saw the circuit open")
        time.sleep(0.01)
    seen_s = time.monotonic() - opened
    run.procs.stop("breaker-a")
    run.procs.stop("breaker-b")
    return {"breaker_propagation_ms": round(seen_s * 1000)}


# --- HTTP ----------------------------------------------------------------------------


def _post(node: Target, key: str, body: dict[str, Any], headers: dict[str, str] | None = None
          ) -> tuple[int, dict[str, Any]]:  # fmt: skip
    request = urllib.request.Request(
        f"http://{HOST}:{node.port}/v1/chat/completions", data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                 **(headers or {})},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def _get(node: Target, path: str, key: str = "") -> bytes:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    request = urllib.request.Request(f"http://{HOST}:{node.port}{path}", headers=headers)
    with urllib.request.urlopen(request, timeout=30) as reply:
        return bytes(reply.read())


def _ask_and_wait(key: str, node: Target, text: str, as_job: bool) -> None:
    body = {"model": "slow", "messages": [{"role": "user", "content": text}]}
    headers = {"X-BeastMode-Async": "true"} if as_job else {}
    status, reply = _post(node, key, body, headers)
    if not as_job:
        if status != 200:
            sys.exit(f"a burst request failed: {status} {reply}")
        return
    deadline = time.monotonic() + 60
    while json.loads(_get(node, f"/v1/jobs/{reply['id']}", key))["status"] != "succeeded":
        if time.monotonic() > deadline:
            sys.exit(f"job {reply['id']} did not succeed within 60 s")
        time.sleep(0.02)


def _circuit_state(node: Target, endpoint: str) -> int | None:
    text = _get(node, "/metrics").decode()
    found = re.search(rf'^beastmode_circuit_state{{endpoint="{endpoint}"}} (\S+)$', text, re.M)
    return int(float(found.group(1))) if found else None


def _upstream_calls(upstream: Target) -> int:
    with urllib.request.urlopen(f"http://{HOST}:{upstream.port}/_stats", timeout=10) as reply:
        return int(json.loads(reply.read()).get("/delay/200/v1/chat/completions", 0))


def report(results: dict[str, float], args: argparse.Namespace) -> None:
    print("\n== figures")
    for name, value in results.items():
        print(f"  {name:<44} {round(value, 1) if isinstance(value, float) else value}")
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
