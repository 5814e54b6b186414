"""The faults of bench/faults.py, one function per scenario: each sets the scenario's
fault_start and fault_end (time.monotonic()) around what it breaks and mends."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.faults import Drill, Scenario


def fault_postgres(drill: Drill, scenario: Scenario) -> None:
    scenario.what = f"Postgres stopped (pg_ctl stop -m fast) for {drill.timings.fault_s:.0f} s"
    scenario.fault_start = time.monotonic()
    drill.postgres.stop("fast")
    time.sleep(max(0.0, scenario.fault_start + drill.timings.fault_s - time.monotonic()))
    drill.postgres.start()
    scenario.fault_end = time.monotonic()


def fault_redis(drill: Drill, scenario: Scenario) -> None:
    scenario.what = f"Redis SIGKILLed, started again (empty) {drill.timings.fault_s:.0f} s later"
    scenario.fault_start = time.monotonic()
    drill.redis.kill()
    time.sleep(drill.timings.fault_s)
    drill.redis.start()
    scenario.fault_end = time.monotonic()


def fault_worker(drill: Drill, scenario: Scenario) -> None:
    running = _wait_for_running_jobs(drill, at_least=2, timeout_s=15)
    scenario.notes["jobs_running_at_kill"] = running
    scenario.what = (f"the worker's process group SIGKILLed with {running} jobs running, "
                     f"a new worker {drill.timings.worker_down_s:.0f} s later")  # fmt: skip
    with drill.worker_lock:  # (not a restart for the supervisor to note)
        scenario.fault_start = time.monotonic()
        os.killpg(drill.procs["worker"].pid, signal.SIGKILL)
        drill.procs["worker"].wait(timeout=10)
        time.sleep(drill.timings.worker_down_s)
        drill.start_worker()
        scenario.fault_end = time.monotonic()
    started_wall = time.time()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # a worker's cold start: until it ends a job
        sql = "SELECT count(*) FROM routing_asyncjob WHERE finished_at > to_timestamp(%s)"
        if drill.query(sql, started_wall)[0][0]:
            break
        time.sleep(0.2)
    scenario.notes["new_worker_ended_its_first_job_after_s"] = round(time.time() - started_wall, 1)


def _wait_for_running_jobs(drill: Drill, *, at_least: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while True:
        sql = "SELECT count(*) FROM routing_asyncjob WHERE status = 'running'"
        running = int(drill.query(sql)[0][0])
        if running >= at_least or time.monotonic() > deadline:
            return running
        time.sleep(0.05)


def fault_sigterm(drill: Drill, scenario: Scenario) -> None:
    assert drill.load is not None
    node, proc = drill.nodes["node-a"], drill.procs["node-a"]
    deadline = time.monotonic() + 15
    while drill.load.in_flight(node.name, "stream") < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    scenario.fault_start = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM)
    in_flight = [s for s in drill.load.samples if s.node == node.name and s.reached
                 and not s.ended and s.started < scenario.fault_start]  # fmt: skip
    scenario.notes["in_flight_at_sigterm"] = [s.request_id for s in in_flight]
    try:
        proc.wait(timeout=30)
        scenario.notes["exit_after_s"] = round(time.monotonic() - scenario.fault_start, 2)
        scenario.notes["exit_code"] = proc.returncode
    except subprocess.TimeoutExpired:
        scenario.notes["exit_after_s"] = None  # still alive: killed, and said so
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    drill.run.procs.stop("node-a")  # (closes its log)
    scenario.what = (f"SIGTERM to node A with {len(in_flight)} requests in flight "
                     f"({sum(s.kind == 'stream' for s in in_flight)} streams), "
                     "started again once it exited")  # fmt: skip
    drill.start_node("node-a", node.port, "node-a-restarted")
    scenario.fault_end = time.monotonic()


FAULTS = {"postgres": fault_postgres, "redis": fault_redis, "worker": fault_worker,
          "sigterm": fault_sigterm}  # fmt: skip
