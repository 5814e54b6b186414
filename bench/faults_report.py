"""Figures of bench/faults.py: what the load saw in each scenario, the records and jobs the
database holds at the end, and the targets, PASS or FAIL."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.faults_load import Load, Sample

if TYPE_CHECKING:
    from bench.faults import Scenario

SLOW_S = 2.0  # the target: no request slower than this because of a fault
JOBS_END_WITHIN_S_TEXT = "2 min"  # bench/faults.py's JOBS_END_WITHIN_S
JOB_SLOW_S = 10.0  # a job that took longer (normally about 1 s) has not recovered yet
Query = Callable[..., list[tuple[Any, ...]]]
Records = dict[str, Counter[str]]  # request id -> records by method (POST, GET, JOB)


@dataclass
class JobRow:
    request_id: str
    status: str
    attempts: int
    created_at: float  # wall clock
    finished_at: float | None
    error: str


def wait_for_records(query: Query, load: Load, *, timeout_s: float = 60) -> Records:
    """The drill's records once their count stopped growing (writers flush every 2 s)."""
    deadline, last, steady = time.monotonic() + timeout_s, -1, 0
    rows: list[tuple[Any, ...]] = []
    while time.monotonic() < deadline and steady < 3:
        time.sleep(2)
        rows = query(
            "SELECT request_id, method, count(*) FROM monitoring_requestrecord"
            " WHERE request_id LIKE 'drill-%%' GROUP BY request_id, method"
        )
        total = sum(row[2] for row in rows)
        steady = steady + 1 if total == last else 0
        last = total
    records: Records = {}
    for request_id, method, count in rows:
        records.setdefault(request_id, Counter())[method] += count
    return records


def jobs_in_database(query: Query) -> dict[str, JobRow]:
    rows = query(
        "SELECT id, request_id, status, attempts, extract(epoch FROM created_at),"
        " extract(epoch FROM finished_at), coalesce(result->'error'->>'code', '')"
        " FROM routing_asyncjob"
    )
    return {
        job_id: JobRow(
            request_id,
            status,
            attempts,
            float(created),
            None if ended is None else float(ended),
            error,
        )
        for job_id, request_id, status, attempts, created, ended, error in rows
    }


def wait_s(sample: Sample) -> float:
    """How long the client waited for its answer (first chunk of a stream) or its error."""
    return sample.latency_s if sample.latency_s is not None else sample.ended - sample.started


def is_bad(sample: Sample) -> bool:
    return bool(sample.error) or wait_s(sample) > SLOW_S


def recovered_at(samples: Iterable[Sample], scenario: Scenario) -> float | None:
    """When requests went well again: the start of the first good request after the last
    bad one (an error, or slower than SLOW_S), not before the fault's end; None while the
    last ended request is bad."""
    ended = sorted(
        (s for s in list(samples) if s.started >= scenario.fault_start and s.ended),
        key=lambda s: s.started,
    )
    last_bad = max((i for i, s in enumerate(ended) if is_bad(s)), default=None)
    if last_bad is None:
        return scenario.fault_end
    if last_bad + 1 >= len(ended):
        return None
    return max(scenario.fault_end, ended[last_bad + 1].started)


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def report(
    load: Load, scenarios: list[Scenario], records: Records, jobs: dict[str, JobRow]
) -> dict[str, dict[str, Any]]:
    """Print each scenario's figures and the targets; the figures, by scenario."""
    figures = {s.name: _scenario(load, s, records, jobs) for s in scenarios}
    print("\n== targets")
    for name, fig in figures.items():
        for target, passed in fig["targets"].items():
            print(f"  {name:<9} {target:<52} {'PASS' if passed else 'FAIL'}")
    warm = [s for s in load.samples if s.label == "warmup" and s.reached]
    missing = sum(1 for s in warm if not _client_records(records, s))
    print(f"\n  (warm-up: {len(warm)} requests, {missing} without a record)")
    return figures


def _client_records(records: Records, sample: Sample) -> int:
    found = records.get(sample.request_id, Counter())
    return sum(count for method, count in found.items() if method != "JOB")


def _scenario(
    load: Load, scenario: Scenario, records: Records, jobs: dict[str, JobRow]
) -> dict[str, Any]:
    mine = [s for s in load.samples if s.label == scenario.name and s.ended]
    before = [s for s in mine if s.ended < scenario.fault_start]
    during = [s for s in mine if s.ended >= scenario.fault_start and s.started < scenario.fault_end]
    after = [s for s in mine if s.started >= scenario.fault_end]
    print(f"\n== {scenario.name}: {scenario.what}")
    polls = sum(s.kind == "poll" for s in mine)
    rerouted = sum(s.refused > 0 for s in mine)
    print(f"  fault lasted {scenario.fault_end - scenario.fault_start:.1f} s; {len(mine)} "
          f"requests in the scenario ({polls} job polls), {rerouted} sent to the other node "
          "after a refused connect")  # fmt: skip
    errors = {
        window: Counter(f"{s.kind}: {s.error}" for s in group if s.error)
        for window, group in (("before", before), ("during", during), ("after", after))
    }
    for window, counted in errors.items():
        text = ", ".join(f"{what} x{n}" for what, n in counted.most_common()) or "none"
        print(f"  errors {window:<6} {text}")

    latency: dict[str, dict[str, float | None]] = {}
    print(f"  {'wait (ms; streams: first chunk)':<34}{'n':>6}{'P50':>7}{'P99':>7}{'max':>7}"
          f"{'>2s':>5}")  # fmt: skip
    outside = before + after
    for window, group in (("during the fault", during), ("outside it", outside),
                          ("  before", before), ("  after", after)):  # fmt: skip
        waits = [wait_s(s) for s in group if s.reached]
        row = {"p50": percentile(waits, 0.5), "p99": percentile(waits, 0.99),
               "max": max(waits, default=None)}  # fmt: skip
        latency[window.strip()] = row
        slow = sum(1 for w in waits if w > SLOW_S)
        print(f"  {window:<34}{len(waits):>6}{_ms(row['p50']):>7}{_ms(row['p99']):>7}"
              f"{_ms(row['max']):>7}{slow:>5}")  # fmt: skip
    slow_from_fault = sum(1 for s in during + after if s.reached and wait_s(s) > SLOW_S)
    slow_before = sum(1 for s in before if s.reached and wait_s(s) > SLOW_S)

    recovered = recovered_at(mine, scenario)
    recovery_s = None if recovered is None else recovered - scenario.fault_end
    job_figures = _jobs(load, scenario, jobs, records)
    print(f"  recovery: requests {_s(recovery_s)} after the fault's end, jobs "
          f"{_s(job_figures['recovery_s'])}; the jobs submitted before its end all ended "
          f"{_s(job_figures['fault_jobs_ended_after_s'])} after it")  # fmt: skip

    reached = [s for s in mine if s.reached]
    counts = [_client_records(records, s) for s in reached]
    missing = [s for s, n in zip(reached, counts, strict=True) if n == 0]
    duplicated = sum(1 for n in counts if n > 1)
    never_reached = len(mine) - len(reached)
    why_missing = Counter(f"{s.kind}: {s.error or 'ok'}" for s in missing)
    print(f"  records: {len(reached)} requests reached a node, {len(reached) - len(missing)} "
          f"have a record, {len(missing)} none, {duplicated} more than one; "
          f"{never_reached} reached no node")  # fmt: skip
    if missing:
        print("    without a record: " + ", ".join(f"{k} x{n}" for k, n in why_missing.items()))
    print(f"  jobs: {job_figures['accepted']} accepted: {job_figures['by_status']}; "
          f"{job_figures['open_after_wait']} of the fault's still open "
          f"{JOBS_END_WITHIN_S_TEXT} after recovery; worker records for "
          f"{job_figures['ended_with_worker_record']} of {job_figures['ended_by_a_run']} "
          "jobs ended by a run")  # fmt: skip
    took = job_figures["duration_s"]
    print(f"  jobs took (submitted to ended) P50 {_s(took['p50'])}, P99 {_s(took['p99'])}, "
          f"max {_s(took['max'])}; runs per job: {job_figures['by_attempts']}")  # fmt: skip
    if job_figures["refused_but_kept"]:
        print(
            f"  ! {len(job_figures['refused_but_kept'])} job POSTs answered with an error "
            "left a job that ran or is queued: " + ", ".join(job_figures["refused_but_kept"])
        )
    for key, value in scenario.notes.items():
        if key not in ("in_flight_at_sigterm", "jobs_open_after_wait"):
            print(f"  {key}: {value}")

    targets = {
        f"0 requests over {SLOW_S:.0f} s from the fault ({slow_from_fault})": slow_from_fault == 0,
        f"records == requests ({len(missing)} missing, {duplicated} extra)": not missing
        and not duplicated,
        f"0 jobs open {JOBS_END_WITHIN_S_TEXT} after recovery "
        f"({job_figures['open_after_wait']})": job_figures["open_after_wait"] == 0,
    }
    cut: list[str] = []
    if "in_flight_at_sigterm" in scenario.notes:
        by_id = {s.request_id: s for s in load.samples}
        in_flight = [by_id[i] for i in scenario.notes["in_flight_at_sigterm"]]
        cut = [f"{s.kind}: {s.error}" for s in in_flight if s.error]
        print(
            f"  in flight at SIGTERM: {len(in_flight)}, cut: {len(cut)}"
            + (f" ({', '.join(f'{k} x{n}' for k, n in Counter(cut).items())})" if cut else "")
        )
        targets[f"0 in-flight requests cut by SIGTERM ({len(cut)} of {len(in_flight)})"] = not cut
    return {
        "what": scenario.what,
        "fault_s": round(scenario.fault_end - scenario.fault_start, 1),
        "requests": len(mine),
        "errors": {window: dict(counted) for window, counted in errors.items()},
        "latency_s": latency,
        "over_2s_from_fault": slow_from_fault,
        "over_2s_before_fault": slow_before,
        "recovery_s": recovery_s,
        "records": {"reached": len(reached), "missing": len(missing), "duplicated": duplicated,
                    "never_reached": never_reached, "why_missing": dict(why_missing)},
        "jobs": job_figures,
        "sigterm_cut": cut,
        "notes": {k: v for k, v in scenario.notes.items() if k != "in_flight_at_sigterm"},
        "targets": targets,
    }  # fmt: skip


def _s(value: float | None) -> str:
    return "not within the scenario" if value is None else f"{value:.1f} s"


def _jobs(
    load: Load, scenario: Scenario, jobs: dict[str, JobRow], records: Records
) -> dict[str, Any]:
    posts = sorted((s for s in load.samples if s.label == scenario.name and s.kind == "job"),
                   key=lambda s: s.started)  # fmt: skip
    accepted = [s for s in posts if s.job_id]
    rows = {s.job_id: jobs.get(s.job_id) for s in accepted}
    by_status = Counter(
        "missing from the table" if row is None
        else f"{row.status}: {row.error}" if row.error else row.status
        for row in rows.values()
    )  # fmt: skip

    def is_good(sample: Sample) -> bool:
        row = rows.get(sample.job_id)
        return (row is not None and row.status == "succeeded" and row.finished_at is not None
                and row.finished_at - row.created_at <= JOB_SLOW_S)  # fmt: skip

    since_fault = [s for s in posts if s.started >= scenario.fault_start]
    last_bad = max((i for i, s in enumerate(since_fault) if not is_good(s)), default=None)
    recovery_s: float | None = 0.0
    if last_bad is not None:
        if last_bad + 1 < len(since_fault):
            recovery_s = max(0.0, since_fault[last_bad + 1].started - scenario.fault_end)
        else:
            recovery_s = None
    of_fault = [rows[s.job_id] for s in accepted if s.started < scenario.fault_end]
    finished = [row.finished_at for row in of_fault if row is not None]
    ended_after_s: float | None = None
    if of_fault and all(f is not None for f in finished) and len(finished) == len(of_fault):
        ended_after_s = max(0.0, max(f for f in finished if f is not None)
                            - scenario.fault_end_wall)  # fmt: skip
    ended_by_run = [
        s for s in accepted
        if (row := rows[s.job_id]) is not None and row.status in ("succeeded", "failed")
        and row.error != "job_abandoned"
    ]  # fmt: skip
    with_record = sum(1 for s in ended_by_run if records.get(s.request_id, Counter())["JOB"])
    # A POST refused (an error) must leave no job behind: a client would submit it again.
    job_request_ids = {row.request_id for row in jobs.values()}
    refused_but_kept = [
        s.request_id for s in posts
        if s.error and s.reached
        and (s.request_id in job_request_ids or records.get(s.request_id, Counter())["JOB"])
    ]  # fmt: skip
    return {
        "accepted": len(accepted),
        "refused": len(posts) - len(accepted),
        "by_status": dict(by_status),
        "recovery_s": recovery_s,
        "fault_jobs_ended_after_s": ended_after_s,
        "open_after_wait": scenario.notes.get("jobs_open_after_wait", -1),
        "ended_by_a_run": len(ended_by_run),
        "ended_with_worker_record": with_record,
        "refused_but_kept": refused_but_kept,
        "duration_s": _durations(rows.values()),
        "by_attempts": dict(Counter(row.attempts for row in rows.values() if row is not None)),
        "rows": [  # submitted (s from the fault's end), took (s), attempts, status
            (round(row.created_at - scenario.fault_end_wall, 1),
             None if row.finished_at is None else round(row.finished_at - row.created_at, 1),
             row.attempts, row.status)
            for row in rows.values() if row is not None
        ],
    }  # fmt: skip


def _durations(rows: Iterable[JobRow | None]) -> dict[str, float | None]:
    """From submission to the end, as the database has it (seconds)."""
    took = [r.finished_at - r.created_at for r in rows if r is not None and r.finished_at]
    return {"p50": percentile(took, 0.5), "p99": percentile(took, 0.99),
            "max": max(took, default=None)}  # fmt: skip
