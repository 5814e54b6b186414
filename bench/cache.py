"""Cache benchmark: exact hits over HTTP, semantic lookup latency, FAISS at 1M, RSS, warming.

Rerun (from the repository root; ~7 minutes with the defaults, ~2 of them the 1M build,
longer on a loaded machine; ~3 minutes with --quick --skip-million):

    .venv/bin/python bench/cache.py                        # everything
    .venv/bin/python bench/cache.py --skip-million         # without the 1M-entry FAISS build
    .venv/bin/python bench/cache.py --quick                # smoke run (short points, 200k not 1M)
    .venv/bin/python bench/cache.py --only http,rss        # some parts only

Parts (``--only``, comma-separated; default all), each checked against the cache issue's target:

http
    Exact hits through HTTP. Starts the 0 ms fake upstream and BeastMode (throw-away SQLite,
    ``load_demo --semantic off``: model ``demo``, exact cache on) and the bare ASGI app
    (``bench/bare_asgi.py``) under daphne and under uvicorn (one process each, the flags of
    bench/gateway.py). wrk sends one identical body (``--body same`` of bench/gateway.py)
    after one warm-up request stored its answer; a sample of responses must carry
    ``x-beastmode-cache: exact`` before each point is measured. Target: daphne exact-hit
    req/s >= 50% of the bare app's under daphne, same run; uvicorn is context. The miss
    (pass-through, unique bodies) is measured after the hits for contrast.
semantic
    In process: a cache.semantic.vector_index.SemanticIndex with 100k entries in one partition (real
    QQP question1 embeddings plus random unit vectors; HNSW, as the index switches past
    20k), then real QQP question2 texts asked one at a time on one thread: embed
    (cache.semantic.embedder) and search (top-4, scouting first as a lookup does at the default
    threshold; outside the timing, each answer is checked against the full search).
    Target: embed + search P50 <= 3 ms.
million
    In process: 1M synthetic clustered unit vectors (low intrinsic dimension, so recall
    means something) added in batches of 50k to a cache.semantic.vector_index.SemanticIndex
    as int8 codes, then its rebuild (int8 HNSW, M=32, efSearch=96, one thread), timed
    together. Then single-query top-4 search timings and
    recall@1 against exact search on 200 held-out queries. Target: search P99 <= 1 ms.
rss
    Real gateway processes (daphne, beastmode.asgi:application; ``--rss-runs``, default 3,
    the median is judged): VmRSS from /proc/<pid>/status after a few requests, first with
    no semantic route (embedder not loaded), then, after importing a model with
    ``cache: {semantic: "on"}`` (which makes cache/semantic/index_sync.py preload the embedder at
    start), after a few semantic requests (paraphrases must come back
    ``x-beastmode-cache: semantic``). Target: <= 250 MiB.
warming
    A model whose upstream answers after 300 ms (``/delay/300/v1`` of
    devtools.fake_upstream), on its own daphne gateway. N warm-up prompts (WarmupPrompt rows)
    are warmed with ``manage.py warmcache`` (in process: no broker) while the gateway runs;
    then the first client request of each warmed prompt and of N cold prompts is timed
    through HTTP (a new connection each, interleaved). Target: every warmed prompt is a
    cache hit on its first request, faster than cold.

Every subprocess is stopped on exit (also on Ctrl-C / SIGTERM), with bench/gateway.py's
ProcessGroup. The machine is shared and noisy: compare ratios measured in one run.
Needs wrk (see bench/gateway.py) and, for real questions, ../shared/data/qqp_tune_5k.tsv
(``--data``; a small built-in list is used without it).
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

_BENCH_DIR = Path(__file__).resolve().parent
# `python bench/cache.py` puts bench/ first on sys.path, where this file would shadow the
# `cache` package it measures: look modules up from the repository root instead. The parts'
# modules (bench/cache_*.py) are therefore imported as `bench.cache_*`, after this.
if sys.path and Path(sys.path[0] or ".").resolve() == _BENCH_DIR:
    sys.path[0] = str(_BENCH_DIR.parent)

from bench.cache_common import Report  # noqa: E402
from bench.cache_http import part_http  # noqa: E402
from bench.cache_memory import part_rss  # noqa: E402
from bench.cache_semantic import part_million, part_semantic  # noqa: E402
from bench.cache_warming import part_warming  # noqa: E402
from bench.gateway import (  # noqa: E402
    REPO,
    ProcessGroup,
    Run,
    _raise_exit,
    _versions,
    ensure_wrk,
    gateway_env,
    prepare_gateway,
    start_upstream,
    work_directory,
)

PARTS = ("http", "semantic", "million", "rss", "warming")


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smoke run: short, smaller sizes")
    parser.add_argument("--skip-million", action="store_true", help="skip the 1M FAISS build")
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated: {PARTS}")
    parser.add_argument("--duration", type=float, default=None, help="s per HTTP point (8)")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up s per point (2)")
    parser.add_argument("--servers", default="daphne,uvicorn", help="HTTP part: servers")
    parser.add_argument("--concurrency", default="1,16", help="HTTP part: connection counts")
    parser.add_argument("--no-miss", action="store_true", help="HTTP part: skip the misses")
    parser.add_argument("--entries", type=int, default=100_000, help="semantic: index size")
    parser.add_argument("--real-entries", type=int, default=None, help="semantic: real (2000)")
    parser.add_argument("--queries", type=int, default=None, help="semantic: questions (500)")
    parser.add_argument("--million-n", type=int, default=None, help="million: size (1M)")
    parser.add_argument("--million-queries", type=int, default=200, help="recall queries")
    parser.add_argument("--million-timed", type=int, default=1800, help="extra timed queries")
    parser.add_argument("--rss-runs", type=int, default=None, help="rss: processes each (3)")
    parser.add_argument("--warm-n", type=int, default=20, help="warming: prompts of each kind")
    parser.add_argument(
        "--data", type=Path, default=REPO.parent / "shared" / "data", help="QQP data dir"
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the subprocess logs")
    args = parser.parse_args(argv)
    args.only = [p for p in args.only.split(",") if p]
    for part in args.only:
        if part not in PARTS:
            parser.error(f"unknown part {part!r}; choose from {', '.join(PARTS)}")
    if args.skip_million and "million" in args.only:
        args.only.remove("million")
    if args.duration is None:
        args.duration = 3.0 if args.quick else 8.0
    if args.warmup is None:
        args.warmup = 1.0 if args.quick else 2.0
    if args.real_entries is None:
        args.real_entries = 500 if args.quick else 2000
    if args.queries is None:
        args.queries = 150 if args.quick else 500
    if args.rss_runs is None:
        args.rss_runs = 1 if args.quick else 3
    if args.million_n is None:
        args.million_n = 200_000 if args.quick else 1_000_000
    args.servers = [s for s in args.servers.split(",") if s]
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c]
    # What bench/gateway.py's helpers read from its own arguments.
    args.upstream_module = "devtools.fake_upstream"
    args.project_dir = REPO
    return args


def print_report(report: Report) -> None:
    width = max([len(r.target) for r in report.rows] + [6])
    vwidth = max([len(r.verdict) for r in report.rows] + [7])
    print(f"\n{'target':<{width}}  {'verdict':<{vwidth}}  measured")
    print("-" * (width + vwidth + 12))
    for r in report.rows:
        print(f"{r.target:<{width}}  {r.verdict:<{vwidth}}  {r.measured}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_exit)
    signal.signal(signal.SIGHUP, _raise_exit)
    given = list(argv) if argv is not None else sys.argv[1:]
    rerun = "  " + shlex.join([".venv/bin/python", "bench/cache.py", *given])
    needs_processes = any(p in args.only for p in ("http", "rss", "warming"))
    if "http" in args.only:
        ensure_wrk()
    load_start = os.getloadavg()
    print(f"BeastMode cache benchmark: parts {', '.join(args.only)}")
    print(
        f"{os.cpu_count()} CPUs, load average {load_start[0]:.2f} {load_start[1]:.2f} "
        f"{load_start[2]:.2f}; {_versions()}"
    )
    report = Report()
    with work_directory(args.keep_logs) as work_dir:
        run = Run(args=args, procs=ProcessGroup(work_dir), work_dir=work_dir)
        try:
            if needs_processes:
                upstream = start_upstream(run)
                print(f"fake upstream on :{upstream.port}")
                env = gateway_env(run)
                key = prepare_gateway(run, upstream, env)
                if key is None:
                    raise RuntimeError("the gateway could not be prepared (see the notices)")
                if "http" in args.only:
                    part_http(run, args, upstream, key, env, report)
                if "rss" in args.only:
                    part_rss(run, args, upstream, key, env, report)
                if "warming" in args.only:
                    part_warming(run, args, upstream, key, env, report)
        finally:
            run.procs.stop_all()
        report.notices += run.notices
    if "semantic" in args.only:
        part_semantic(args, report)
    if "million" in args.only:
        part_million(args, report)
    load_end = os.getloadavg()
    print_report(report)
    print(
        f"\nload average {load_start[0]:.2f} at start, {load_end[0]:.2f} at end "
        f"({os.cpu_count()} CPUs, shared machine)"
    )
    for text in report.notices:
        print(f"NOTICE: {text}")
    print(f"\nRerun:\n{rerun}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
