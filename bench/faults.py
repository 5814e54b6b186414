"""Fault drill: BeastMode under a steady load while its dependencies fail, one at a time.

Rerun (from the repository root; ~8 minutes with the defaults, ~5 with --quick; longer when
jobs are slow to end, up to 2 minutes more per scenario):

    .venv/bin/python bench/faults.py
    .venv/bin/python bench/faults.py --quick --scenarios redis,worker
    .venv/bin/python bench/faults.py --json-out /tmp/faults.json

Everything runs on loopback and is started and stopped by the script (also on Ctrl-C): a
private PostgreSQL and Redis (devtools/servers.py), the fake upstream, two gateway nodes
under daphne (each with a var dir of its own, as two machines) and one
`celery -A beastmode worker -B`. A steady open-loop load of about 20 requests a second
goes to both nodes (bench/faults_load.py): new prompts, repeated ones (cache hits),
streams of about a second, and async jobs of a second each, polled at GET /v1/jobs/<id>.
Then, in turn, with recovery between them (`--scenarios`, all by default):

- postgres: `pg_ctl stop -m fast` for 20 s, then started again;
- redis: SIGKILL for 20 s, then started again on the same port (empty);
- worker: SIGKILL to the worker's whole process group (its beat too) while jobs run,
  a new worker 5 s later;
- sigterm: SIGTERM to node A while streams are in flight on it, started again once it exits.

Per scenario: the errors clients saw (status and error code), latency P50/P99 during the
fault and outside it, recovery time, records written against requests sent (by request
id, read from the database at the end), and async jobs not ended 2 minutes after recovery
(routing_asyncjob). Targets, PASS/FAIL: no request over 2 s because of the fault, one
record per request, every job ended within 2 minutes of recovery, no in-flight request cut
by SIGTERM. Job timings are shortened for the drill (DRILL_ENV, printed at the start).
The load is bench/faults_load.py, the faults bench/faults_scenarios.py, the figures
bench/faults_report.py.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from bench import faults_report, faults_scenarios
from bench.faults_load import Load, Node
from bench.gateway_endpoints import HOST, REPO, VENV_BIN, Target
from bench.gateway_processes import (
    ProcessGroup,
    Run,
    free_port,
    gateway_env,
    prepare_gateway,
    start_upstream,
    wait_ready,
)
from devtools.servers import PostgresServer, RedisServer, private_postgres, private_redis

SCENARIOS = ("postgres", "redis", "worker", "sigterm")
# Job timings shortened so that lost and dead jobs come back within the drill (defaults:
# lease 30 s, reaper every 30 s, a queued job sent again after 120 s).
DRILL_ENV = {
    "BEASTMODE_JOB_LEASE_S": "10",
    "BEASTMODE_JOB_REAP_INTERVAL_S": "5",
    "BEASTMODE_JOB_RESEND_AFTER_S": "30",
}
JOBS_END_WITHIN_S = 120.0  # the target: every job ended this long after recovery
RESTART_AFTER_S = 5.0  # a worker that exited on its own is started again this much later
MODELS = """
models:
  - name: drill
    endpoints:
      - {{name: drill-ep, provider: openai, base_url: "{upstream}/delay/50/v1", model: drill}}
  - name: drill-stream
    endpoints:
      - {{name: drill-stream-ep, provider: openai, base_url: "{upstream}/delay/100/v1",
          model: drill-stream}}
  - name: drill-job
    endpoints:
      - {{name: drill-job-ep, provider: openai, base_url: "{upstream}/delay/1000/v1",
          model: drill-job}}
"""


@dataclass
class Timings:
    warmup_s: float = 10.0
    before_s: float = 15.0  # load before the fault (and recovery from the one before)
    fault_s: float = 20.0
    after_s: float = 30.0  # at least this long after the fault's end
    worker_down_s: float = 5.0


@dataclass
class Scenario:
    """One fault as it happened: monotonic times, wall-clock times for the database."""

    name: str
    what: str = ""
    started: float = 0.0
    fault_start: float = 0.0
    fault_end: float = 0.0
    ended: float = 0.0
    fault_end_wall: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Drill:
    """The running drill: its servers, the processes it started, the load, what happened."""

    args: argparse.Namespace
    run: Run
    env: dict[str, str]
    key: str
    postgres: PostgresServer
    redis: RedisServer
    timings: Timings
    nodes: dict[str, Node] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    load: Load | None = None
    scenarios: list[Scenario] = field(default_factory=list)
    # The worker is supervised as systemd's Restart=always would: an exit the drill did not
    # cause is noted (a finding) and a new worker starts RESTART_AFTER_S later.
    worker_exits: list[str] = field(default_factory=list)
    worker_lock: threading.Lock = field(default_factory=threading.Lock)
    _workers_started: int = 0
    _supervising: threading.Event = field(default_factory=threading.Event)

    # --- processes -----------------------------------------------------------------------

    def start_node(self, name: str, port: int, log_name: str) -> None:
        var_dir = self.run.work_dir / f"var-{name}"
        var_dir.mkdir(exist_ok=True)
        env = {**self.env, "BEASTMODE_VAR_DIR": str(var_dir)}
        argv = [str(VENV_BIN / "daphne"), "-v", "0", "-b", HOST, "-p", str(port),
                "beastmode.asgi:application"]  # fmt: skip
        self.procs[name] = self.run.procs.start(log_name, argv, REPO, env)
        checked = wait_ready(self.run.procs, log_name, Target(name, port, self.key), timeout=60)
        if not checked.ok:
            print(self.run.procs.log_tail(log_name))
            sys.exit(f"{name} did not come up: {checked.detail}")
        self.nodes[name] = Node(name, port)

    def start_worker(self) -> None:
        self._workers_started += 1
        log_name = f"worker-{self._workers_started}"
        var_dir = self.run.work_dir / "var-worker"
        var_dir.mkdir(exist_ok=True)
        env = {**self.env, "BEASTMODE_VAR_DIR": str(var_dir)}
        argv = [str(VENV_BIN / "celery"), "-A", "beastmode", "worker", "-B",
                "--concurrency", "4", "--loglevel", "warning"]  # fmt: skip
        self.procs["worker"] = self.run.procs.start(log_name, argv, REPO, env)

    def supervise_worker(self) -> None:
        self._supervising.set()
        threading.Thread(target=self._supervise, daemon=True, name="supervisor").start()

    def _supervise(self) -> None:
        while self._supervising.is_set():
            time.sleep(0.2)
            with self.worker_lock:
                code = self.procs["worker"].poll()
                if code is None:
                    continue
                label = self.load.label if self.load else "start"
                seen = f"worker-{self._workers_started} exited with code {code} on its own "
                seen += f"(in '{label}', {time.strftime('%H:%M:%S')})"
                print(f"   ! {seen}; a new worker in {RESTART_AFTER_S:.0f} s", flush=True)
                self.worker_exits.append(seen)
                time.sleep(RESTART_AFTER_S)
                self.start_worker()

    def stop_supervising(self) -> None:
        self._supervising.clear()
        with self.worker_lock:
            pass  # (waits for a restart in progress)

    def query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.postgres.url, connect_timeout=3, autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()

    # --- scenarios -----------------------------------------------------------------------

    def run_scenario(self, name: str) -> None:
        assert self.load is not None
        scenario = Scenario(name, started=time.monotonic())
        self.load.label = name
        print(f"\n-- {name}: {self.timings.before_s:.0f} s of load first", flush=True)
        time.sleep(self.timings.before_s)
        faults_scenarios.FAULTS[name](self, scenario)
        scenario.fault_end_wall = time.time()
        print(f"   fault over after {scenario.fault_end - scenario.fault_start:.1f} s; "
              "watching recovery and the jobs of the fault", flush=True)  # fmt: skip
        self._wait_for_jobs(scenario)
        scenario.ended = time.monotonic()
        self.scenarios.append(scenario)

    def _wait_for_jobs(self, scenario: Scenario) -> None:
        """Until the jobs created before the fault's end have all ended (and `after_s` has
        passed), or JOBS_END_WITHIN_S after requests recovered: open jobs then."""
        assert self.load is not None
        after_until = scenario.fault_end + self.timings.after_s
        open_jobs = -1
        while True:
            time.sleep(2)
            now = time.monotonic()
            recovered = faults_report.recovered_at(self.load.samples, scenario)
            try:
                open_jobs = self.query(
                    "SELECT count(*) FROM routing_asyncjob WHERE status IN ('queued', 'running')"
                    " AND created_at <= to_timestamp(%s)",
                    scenario.fault_end_wall,
                )[0][0]
            except psycopg.Error as exc:
                print(f"   (the database did not answer the drill: {exc})", flush=True)
            if open_jobs == 0 and now >= after_until:
                scenario.notes["jobs_open_after_wait"] = 0
                return
            if recovered is not None and now >= recovered + JOBS_END_WITHIN_S:
                scenario.notes["jobs_open_after_wait"] = open_jobs
                print(f"   {open_jobs} jobs still open {JOBS_END_WITHIN_S:.0f} s after "
                      "recovery", flush=True)  # fmt: skip
                return


# --- the run ---------------------------------------------------------------------------


def main() -> None:
    args = parse_args()
    timings = Timings()
    if args.quick:
        timings = Timings(warmup_s=5, before_s=8, fault_s=10, after_s=15, worker_down_s=3)
    signal.signal(signal.SIGTERM, _interrupted)
    work_dir = Path(tempfile.mkdtemp(prefix="bm-faults-"))
    procs = ProcessGroup(work_dir)
    drill: Drill | None = None
    try:
        with private_redis() as redis, private_postgres() as postgres:
            env = {**os.environ, "DATABASE_URL": postgres.url, "REDIS_URL": redis.url,
                   **DRILL_ENV}  # fmt: skip
            env.pop("CELERY_BROKER_URL", None)
            os.environ.update(env)  # (gateway_env starts from os.environ)
            run = Run(args=args, procs=procs, work_dir=work_dir)
            env = gateway_env(run)
            upstream = start_upstream(run)
            key = prepare_gateway(run, upstream, env)
            if key is None:
                sys.exit("the gateway could not be prepared")
            models = work_dir / "models.yaml"
            models.write_text(MODELS.format(upstream=f"http://{HOST}:{upstream.port}"))
            subprocess.run([sys.executable, "manage.py", "import_models", str(models)], cwd=REPO,
                           env=env, check=True, capture_output=True, timeout=120)  # fmt: skip
            drill = Drill(args, run, env, key, postgres, redis, timings)
            print_conditions(drill, work_dir)
            drill.start_node("node-a", free_port(), "node-a")
            drill.start_node("node-b", free_port(), "node-b")
            drill.start_worker()
            drill.supervise_worker()
            drill.load = Load(
                nodes=list(drill.nodes.values()), api_key=key, rate_per_s=args.rate,
                models={"json": "drill", "stream": "drill-stream", "job": "drill-job"},
            )  # fmt: skip
            drill.load.start()
            print(f"\n-- warm-up: {timings.warmup_s:.0f} s of load", flush=True)
            time.sleep(timings.warmup_s)
            for name in args.scenarios:
                drill.run_scenario(name)
            print("\n-- load stopped; polling the last jobs, waiting for records", flush=True)
            drill.load.stop(poll_open_jobs_s=30)
            drill.stop_supervising()
            records = faults_report.wait_for_records(drill.query, drill.load)
            jobs = faults_report.jobs_in_database(drill.query)
            for scenario in drill.scenarios:  # what the records of the cut requests say
                if ids := scenario.notes.get("in_flight_at_sigterm"):
                    sql = ("SELECT request_id, status_code, outcome FROM monitoring_requestrecord"
                           " WHERE request_id = ANY(%s) AND method <> 'JOB'")  # fmt: skip
                    scenario.notes["records_of_those_in_flight"] = [
                        f"{status} {outcome}" for _, status, outcome in drill.query(sql, ids)
                    ]
            figures = faults_report.report(drill.load, drill.scenarios, records, jobs)
            print("\n  worker exits the drill did not cause: "
                  + ("; ".join(drill.worker_exits) or "none"))  # fmt: skip
            if args.json_out:
                conditions = {"rate_per_s": args.rate, "quick": args.quick, **DRILL_ENV}
                payload = {"conditions": conditions, "scenarios": figures,
                           "worker_exits": drill.worker_exits}  # fmt: skip
                args.json_out.write_text(json.dumps(payload, indent=2))
            procs.stop_all()  # before Postgres and Redis go (so the logs end quietly)
    finally:
        if drill is not None:
            drill.stop_supervising()
            if drill.load is not None:
                drill.load.stop()
        procs.stop_all()
    print(f"\nlogs: {work_dir}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"some of {','.join(SCENARIOS)}, run in that order")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="shorter phases (10 s faults)")
    parser.add_argument("--rate", type=float, default=20.0, help="requests a second (no polls)")
    parser.add_argument("--json-out", type=Path, help="also write the figures here")
    args = parser.parse_args()
    args.scenarios = [name for name in args.scenarios.split(",") if name]
    if unknown := set(args.scenarios) - set(SCENARIOS):
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    # What bench/gateway_processes.py expects of a run's arguments.
    args.project_dir, args.upstream_module = REPO, "devtools.fake_upstream"
    return args


def print_conditions(drill: Drill, work_dir: Path) -> None:
    t = drill.timings
    print("== fault drill: 2 daphne nodes, 1 celery worker -B (concurrency 4), private "
          "Postgres and Redis, fake upstream, all on loopback")  # fmt: skip
    print(f"   load: {drill.args.rate:.0f} req/s open loop (+ job polls), cores: {os.cpu_count()}")
    print(f"   phases: warm-up {t.warmup_s:.0f} s; per scenario {t.before_s:.0f} s before, "
          f"{t.fault_s:.0f} s fault, >= {t.after_s:.0f} s after")  # fmt: skip
    print("   job settings lowered for the drill: "
          + ", ".join(f"{k}={v}" for k, v in DRILL_ENV.items()))  # fmt: skip
    print(f"   work dir (logs): {work_dir}", flush=True)


def _interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted: everything the drill started was stopped")
