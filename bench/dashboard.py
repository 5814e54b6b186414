"""Dashboard benchmark: snapshot computation at 1M and 10M request records, push jitter
and freshness against a live server.

Rerun (from the repository root; ~15 minutes with the defaults, most of it filling 10M
records; needs Postgres at 127.0.0.1:5432 as user postgres with trust auth, ~10 GB free):

    .venv/bin/python bench/dashboard.py                          # 1M then 10M records
    .venv/bin/python bench/dashboard.py --sizes 100000 --repeats 5 --pushes 3 --freshness 3
    .venv/bin/python bench/dashboard.py --keep                   # keep the database after

What it does:

1. creates the database ``--db-name`` (dropped first if it exists; dropped again at the
   end unless ``--keep``), migrates it and routes six models, each to a primary and a
   fallback endpoint;
2. for each size, adds records until the table holds that many (SQL, ``generate_series``;
   see bench/dashboard_synthetic.py), rebuilds the dashboard's rollups (DashboardRollup) in
   SQL exactly as the record writer would have written them (an hour of them is checked
   against ``monitoring.rollups``' own arithmetic), and runs VACUUM ANALYZE;
3. times ``monitoring.snapshot.compute(window)`` for every window, ``--repeats`` times after
   one warm-up, with the clock frozen at the moment the synthetic history ends (so every
   repetition sees the same rows), and separately the time spent in SQL;
4. times the record writer's flushes (DashboardRollup rows, the records INSERT) for
   batches of 25 and 250 records, in a transaction that is rolled back;
5. against the largest size (its history topped up to the present first): starts the fake
   upstream and BeastMode under daphne with the real 5 s push interval, logs a staff user
   in, and opens one websocket per window: records the arrival of ``--pushes`` pushes
   (interval mean / stdev / worst deviation from 5 s, and each push's age on arrival);
   meanwhile sends a trickle of requests, and ``--freshness`` times sends one request for
   a model nothing else uses and measures how long until a push counts it.

Figures are printed as tables; the machine is shared: the load average is printed too.

The parts: dashboard_synthetic.py (the records and rollups as SQL), dashboard_database.py
(the bench database: setup, fill, checks), dashboard_timing.py (snapshots, writer flushes),
dashboard_live.py (the live server); this file parses the arguments, runs them and reports.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dashboard_database import (
    REPO,
    add_records,
    drop_database,
    migrate_and_route,
    rebuild_rollups,
    record_count,
    recreate_database,
    scalar,
    server_env,
    setup_django,
    table_sizes,
    vacuum_analyze,
    verify_rollups,
)
from dashboard_live import LiveFigures, measure_live
from dashboard_synthetic import RECORD_TABLE
from dashboard_timing import FlushTiming, WindowTiming, percentile, time_flushes, time_snapshots

# --------------------------------------------------------------------------- report

TARGET_SNAPSHOT_MS = 50.0
PUSH_INTERVAL_S = 5.0


def print_snapshot_table(timings: list[WindowTiming], repeats: int) -> None:
    print(f"\nSnapshot computation (monitoring.snapshot.compute), {repeats} repetitions each:\n")
    print(
        "| records | window | rollup rows read | P50 ms | P95 ms | max ms | first ms | SQL P50 ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for t in timings:
        print(
            f"| {t.size:,} | {t.window} | {t.rollup_rows:,} | {t.p50_ms:.1f} | {t.p95_ms:.1f} | "
            f"{t.max_ms:.1f} | {t.first_ms:.1f} | {percentile(t.sql_ms, 0.5):.1f} |"
        )
    largest = max(t.size for t in timings)
    worst = max(t.p95_ms for t in timings if t.size == largest)
    verdict = "met" if worst <= TARGET_SNAPSHOT_MS else "NOT met"
    print(
        f"\nTarget ≤ {TARGET_SNAPSHOT_MS:.0f} ms at {largest:,} records: {verdict} "
        f"(worst window P95 {worst:.1f} ms)"
    )


def print_flushes(flushes: list[FlushTiming]) -> None:
    print("\nRecord writer, time per flush inside its transaction (P50 / max ms):\n")
    print("| records per flush | DashboardRollup | records INSERT |")
    print("|---|---|---|")
    for f in flushes:
        cells = [
            f"{percentile(ms, 0.5):.1f} / {max(ms):.1f}" for ms in (f.dashboard_ms, f.records_ms)
        ]
        print(f"| {f.batch} | {' | '.join(cells)} |")


def print_live(live: LiveFigures) -> None:
    print(
        f"\nLive server (daphne, one process, in-memory channel layer, push every "
        f"{PUSH_INTERVAL_S:g} s; trickle {live.trickle_sent} requests; load average "
        f"{live.load[0]:.2f} → {live.load[1]:.2f}):\n"
    )
    print("| window | pushes | interval mean s | stdev ms | max deviation from 5 s ms | "
          "age on arrival P50 / max ms |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for window, intervals in live.intervals_s.items():
        ages = live.ages_s[window]
        deviation = max(abs(i - PUSH_INTERVAL_S) for i in intervals) * 1000
        stdev = statistics.stdev(intervals) * 1000 if len(intervals) > 1 else 0.0
        print(
            f"| {window} | {len(intervals) + 1} | {statistics.mean(intervals):.3f} | "
            f"{stdev:.1f} | {deviation:.1f} | "
            f"{percentile(ages, 0.5) * 1000:.1f} / {max(ages) * 1000:.1f} |"
        )
    fresh = live.freshness_s
    print(
        f"\nFreshness (response received → first push counting the request), "
        f"{len(fresh)} probes: median {statistics.median(fresh):.2f} s, max {max(fresh):.2f} s; "
        f"in the first push after the response: {live.in_next_push}/{len(fresh)}"
    )


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000000,10000000", help="record counts, ascending")
    parser.add_argument("--days", type=float, default=7.0, help="history the records span")
    parser.add_argument("--repeats", type=int, default=30, help="timed computations per window")
    parser.add_argument("--pushes", type=int, default=8, help="push intervals per window")
    parser.add_argument("--freshness", type=int, default=10, help="freshness probes")
    parser.add_argument("--trickle-rate", type=float, default=10.0, help="background req/s")
    parser.add_argument("--no-live", action="store_true", help="skip the live-server part")
    parser.add_argument("--db-name", default="beastmode_bench_dash")
    parser.add_argument("--db-host", default="127.0.0.1")
    parser.add_argument("--db-port", default="5432")
    parser.add_argument("--db-user", default="postgres")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--reuse", action="store_true",
                        help="use the kept database as it is (no fill; its newest record is "
                             "the anchor)")  # fmt: skip
    args = parser.parse_args(argv)
    args.sizes = sorted(int(size) for size in args.sizes.split(",") if size)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    given = list(argv) if argv is not None else sys.argv[1:]
    print(f"BeastMode dashboard benchmark: sizes {', '.join(f'{s:,}' for s in args.sizes)}, "
          f"{args.days:g} days")  # fmt: skip
    free_gib = shutil.disk_usage(REPO).free / 2**30
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, python "
          f"{platform.python_version()}; free disk {free_gib:.0f} GiB")  # fmt: skip
    work_dir = Path(tempfile.mkdtemp(prefix="beastmode-bench-dash-"))
    env = server_env(args, work_dir)
    if not args.reuse:
        recreate_database(args)
    setup_django(env)
    timings: list[WindowTiming] = []
    try:
        if args.reuse:
            anchor = scalar(f"SELECT max(created_at) FROM {RECORD_TABLE}")
            size = record_count()
            print(f"\n== {size:,} records (kept database; {table_sizes()}) ==", flush=True)
            timings += time_snapshots(size, anchor, args.repeats)
        else:
            migrate_and_route()
            anchor = datetime.now(UTC).replace(microsecond=0)
            for size in args.sizes:
                print(f"\n== {size:,} records ==", flush=True)
                spent = add_records(size - record_count(), anchor=anchor, days=args.days)
                since = anchor - timedelta(days=args.days + 1)
                rollup_s = rebuild_rollups(since=since)
                vacuum_s = vacuum_analyze()
                print(
                    f"  filled: insert {spent['insert_s']:.0f} s, indexes "
                    f"{spent['index_s']:.0f} s, rollups {rollup_s:.0f} s, vacuum {vacuum_s:.0f} s; "
                    f"{table_sizes()}",
                    flush=True,
                )
                hour = anchor.replace(minute=0, second=0) - timedelta(hours=5)
                compared, mismatches = verify_rollups(hour=hour)
                print(f"  rollups of {hour:%H}:00 checked against monitoring.rollups: "
                      f"{compared:,} rows, {mismatches} mismatches", flush=True)  # fmt: skip
                timings += time_snapshots(size, anchor, args.repeats)
        print_snapshot_table(timings, args.repeats)
        print_flushes([time_flushes(anchor, batch, flushes=20) for batch in (25, 250)])
        if not args.no_live:
            # Top the history up to the present, so the live windows are full.
            now = datetime.now(UTC)
            rate_per_s = record_count() / (args.days * 86400)
            gap_s = (now - anchor).total_seconds()
            add_records(int(rate_per_s * gap_s), anchor=now, days=gap_s / 86400, bulk=False,
                        progress=lambda _: None)  # fmt: skip
            rebuild_rollups(since=anchor)
            print(f"\n== live server ({record_count():,} records, history topped up "
                  f"by {gap_s:.0f} s) ==", flush=True)  # fmt: skip
            print_live(measure_live(args, env, work_dir))
    finally:
        if args.keep:
            print(f"\ndatabase {args.db_name} kept (--reuse to time it again)")
        else:
            drop_database(args)
        shutil.rmtree(work_dir, ignore_errors=True)
    print(f"\nRerun:\n  {shlex.join(['.venv/bin/python', 'bench/dashboard.py', *given])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
