"""Gateway overhead benchmark: BeastMode vs the upstream directly, a bare ASGI app and LiteLLM.

Rerun (from the repository root; takes ~7 minutes with the defaults, ~2 with --quick):

    .venv/bin/python bench/gateway.py                      # 10 s per point, daphne and uvicorn
    .venv/bin/python bench/gateway.py --quick              # 3 s per point, for a smoke run
    .venv/bin/python bench/gateway.py --duration 20 --servers uvicorn --json-out var/bench.json

Needs ``wrk`` (``apt-get install -y wrk``; the script installs it itself when run as root
on a Debian-like system). LiteLLM's proxy is included when its separate venv exists:

    python3.11 -m venv .bench-venv-litellm
    .bench-venv-litellm/bin/pip install "litellm[proxy]==1.105.0"

What it does, all on loopback ports it picks itself, stopping every process it started
on exit (also on Ctrl-C / SIGTERM):

1. starts the 0 ms fake upstream (``python -m devtools.fake_upstream --port N``);
2. prepares the gateway in a throw-away SQLite dir (``BEASTMODE_VAR_DIR``; or the
   database in ``DATABASE_URL`` if you set one): ``manage.py migrate`` and
   ``manage.py load_demo --upstream-url ...``, whose last stdout line is the service key;
3. for each server (daphne, uvicorn) serves ``bench.bare_asgi:app`` and
   ``beastmode.asgi:application`` with identical flags (single process, no access log),
   then for each mode (JSON, SSE stream) and concurrency (1, 16) measures, back to back:
   the upstream directly, the bare app, BeastMode;
4. starts LiteLLM's proxy (one worker, no DB, no callbacks, spend logs off) against the
   same upstream and measures it the same way, with the upstream directly again just
   before it;
5. prints a table (req/s, P50/P95/P99 latency, *added* latency = target percentile minus
   the direct-upstream percentile at the same concurrency, measured in the same block)
   and the ratios against the targets.

Fairness: every point runs the same duration after a warm-up at the same concurrency, with
one wrk thread per connection (latency timed per request in wrk's Lua: see LUA_TEMPLATE in
gateway_load.py); every target gets the same request body, byte for byte the same size. By
default the body carries a nonce of its wrk run and a fixed-width per-request counter in
the user message (``"hi #1f2e3d4c-00-0000000042"``) so that no exact-match cache can
answer: the figures are the pass-through path. ``--body same`` sends one identical body
instead (for BeastMode that measures the cache-hit path; LiteLLM has no cache configured,
so it still passes through). The machine is shared and noisy: compare the ratios within
one run, not absolute figures across runs.

This file parses the arguments, runs the blocks and writes the report; the rest is split by
topic: gateway_endpoints.py (what a target is, the request body, the answer check),
gateway_processes.py (starting and stopping the processes measured), gateway_load.py (wrk
runs and their figures), gateway_report.py (the table and the checks against the targets).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from types import FrameType

_BENCH_DIR = Path(__file__).resolve().parent
# `python bench/gateway.py` puts bench/ first on sys.path, where this file would shadow the
# app's `gateway` package: look modules up from the repository root (bench.gateway_*).
if sys.path and Path(sys.path[0] or ".").resolve() == _BENCH_DIR:
    sys.path[0] = str(_BENCH_DIR.parent)

# CHAT_PATH, HOST, Measurement and request_body are not used here: bench/cache*.py import
# them from bench.gateway.
from bench.gateway_endpoints import (  # noqa: E402
    CHAT_PATH,  # noqa: F401
    HOST,  # noqa: F401
    MODES,
    REPO,
    SERVERS,
    Target,
    check_target,
    request_body,  # noqa: F401
)
from bench.gateway_load import Measurement, ensure_wrk, measure  # noqa: E402, F401
from bench.gateway_processes import (  # noqa: E402
    ProcessGroup,
    Run,
    create_limited_key,
    free_port,
    gateway_env,
    litellm_version,
    prepare_gateway,
    server_argv,
    start_litellm,
    start_upstream,
    wait_ready,
)
from bench.gateway_report import (  # noqa: E402
    add_added_latency,
    print_context,
    print_table,
    print_targets,
)

# --------------------------------------------------------------------------- blocks


def check_modes(run: Run, target: Target, label: str) -> bool:
    """Both modes must answer correctly before a target is measured."""
    for mode in run.args.modes:
        result = check_target(target, mode)
        cache = f", x-beastmode-cache={result.cache_header}" if result.cache_header else ""
        status = "ok" if result.ok else "FAILED"
        print(f"  check {label} {mode}: {status} ({result.detail[:120]}{cache})")
        if not result.ok:
            run.notice(f"{label} answered {mode} wrongly ({result.detail[:200]}): skipped")
            return False
    return True


def measure_block(run: Run, block: str, server: str, targets: list[Target]) -> None:
    """Every mode x concurrency, the targets back to back (the direct upstream first)."""
    for mode in run.args.modes:
        for concurrency in run.args.concurrency:
            for target in targets:
                try:
                    result = measure(
                        block, server, target, mode, concurrency, run.args, run.work_dir
                    )
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    run.notice(f"{block} {mode} c={concurrency} {target.name}: not measured: {exc}")
                    continue
                run.results.append(result)


def bench_server(
    run: Run, server: str, upstream: Target, gateway_key: str | None, env: dict[str, str]
) -> None:
    print(f"\n== {server} ==", flush=True)
    targets = [upstream]
    bare_name, gw_name = f"bare-{server}", f"beastmode-{server}"
    bare = Target("bare", free_port(), "sk-bare-000000000000000000000000")
    run.procs.start(
        bare_name, server_argv(server, "bench.bare_asgi:app", bare.port), REPO, dict(os.environ)
    )
    ready = wait_ready(run.procs, bare_name, bare, timeout=30)
    if ready.ok and check_modes(run, bare, bare_name):
        targets.append(bare)
    else:
        run.notice(f"bare app under {server} did not come up ({ready.detail})")
        print(run.procs.log_tail(bare_name))
    if gateway_key is not None:
        gateway = Target("beastmode", free_port(), gateway_key)
        run.procs.start(
            gw_name,
            server_argv(server, run.args.gateway_app, gateway.port),
            run.args.project_dir,
            env,
        )
        ready = wait_ready(run.procs, gw_name, gateway, timeout=60)
        if ready.ok and check_modes(run, gateway, gw_name):
            targets.append(gateway)
            if run.limited_key:  # the same server, a key with limits: measured right after
                targets.append(Target("limited", gateway.port, run.limited_key))
        else:
            run.notice(
                f"BeastMode under {server} did not answer correctly ({ready.detail[:300]}): skipped"
            )
            print(run.procs.log_tail(gw_name))
    try:
        measure_block(run, server, server, targets)
    finally:
        run.procs.stop(bare_name)
        run.procs.stop(gw_name)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds measured per point (default 10)"
    )
    parser.add_argument(
        "--warmup", type=float, default=None, help="warm-up seconds per point (default 2, quick 1)"
    )
    parser.add_argument(
        "--servers", default="daphne,uvicorn", help="comma-separated: daphne,uvicorn"
    )
    parser.add_argument(
        "--concurrency", default="1,16", help="comma-separated connection counts (default 1,16)"
    )
    parser.add_argument("--modes", default="json,stream", help="comma-separated: json,stream")
    parser.add_argument(
        "--quick", action="store_true", help="3 s per point, 1 s warm-up (smoke run)"
    )
    parser.add_argument(
        "--body",
        choices=("unique", "same"),
        default="unique",
        help="unique: per-request counter, defeats exact caching (default); same: identical bodies",
    )
    parser.add_argument("--no-litellm", action="store_true", help="skip LiteLLM's proxy")
    parser.add_argument(
        "--limited-key",
        action="store_true",
        help="also measure BeastMode with a key that has every limit (RPM, TPM, requests at "
        "once, budget), set so high nothing is refused: the cost of the limit checks",
    )
    parser.add_argument(
        "--no-gateway",
        action="store_true",
        help="skip BeastMode (upstream, bare app, LiteLLM only)",
    )
    parser.add_argument(
        "--json-out", type=Path, default=None, help="also write all figures to this JSON file"
    )
    parser.add_argument(
        "--project-dir",
        type=Path,
        default=REPO,
        help="BeastMode checkout to run (default: this one)",
    )
    parser.add_argument(
        "--gateway-app", default="beastmode.asgi:application", help="ASGI path of the gateway"
    )
    parser.add_argument(
        "--upstream-module",
        default="devtools.fake_upstream",
        help="module run as the fake upstream",
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the work dir with the subprocess logs"
    )
    args = parser.parse_args(argv)
    if args.quick and args.duration == 10.0:
        args.duration = 3.0
    if args.warmup is None:
        args.warmup = 1.0 if args.quick else 2.0
    args.servers = [s for s in args.servers.split(",") if s]
    args.modes = [m for m in args.modes.split(",") if m]
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c]
    args.project_dir = args.project_dir.resolve()
    for server in args.servers:
        if server not in SERVERS:
            parser.error(f"unknown server {server!r}; choose from {', '.join(SERVERS)}")
    for mode in args.modes:
        if mode not in MODES:
            parser.error(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    return args


def _raise_exit(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def work_directory(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="beastmode-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"\nlogs kept in {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def _versions() -> str:
    parts = [f"python {platform.python_version()}"]
    for module in ("daphne", "uvicorn", "django"):
        try:
            parts.append(f"{module} {__import__(module).__version__}")
        except (ImportError, AttributeError):
            parts.append(f"{module} ?")
    try:
        wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
        parts.append((wrk.stdout + wrk.stderr).split("Copyright")[0].strip() or "wrk ?")
    except FileNotFoundError:
        parts.append("wrk not installed")
    parts.append(f"litellm {litellm_version()}")
    return ", ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    ensure_wrk()
    signal.signal(signal.SIGTERM, _raise_exit)
    signal.signal(signal.SIGHUP, _raise_exit)
    given = list(argv) if argv is not None else sys.argv[1:]
    rerun = "  " + shlex.join([".venv/bin/python", "bench/gateway.py", *given])
    print(
        f"BeastMode gateway benchmark: {args.duration:g} s per point "
        f"after {args.warmup:g} s warm-up, body={args.body}, one wrk thread per connection"
    )
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; {_versions()}")
    with work_directory(args.keep_logs) as work_dir:
        run = Run(args=args, procs=ProcessGroup(work_dir), work_dir=work_dir)
        try:
            upstream = start_upstream(run)
            print(f"fake upstream on :{upstream.port}")
            env = gateway_env(run)
            key = None if args.no_gateway else prepare_gateway(run, upstream, env)
            if key is not None and args.limited_key:
                run.limited_key = create_limited_key(run, env)
            for server in args.servers:
                bench_server(run, server, upstream, key, env)
            if not args.no_litellm:
                print("\n== litellm ==", flush=True)
                litellm = start_litellm(run, upstream)
                if litellm is not None and check_modes(run, litellm, "litellm"):
                    try:
                        measure_block(run, "litellm", "uvicorn", [upstream, litellm])
                    finally:
                        run.procs.stop("litellm")
        finally:
            run.procs.stop_all()
        add_added_latency(run.results)
        print_table(run.results)
        checks = print_targets(run.results)
        print_context(run.results)
        for text in run.notices:
            print(f"NOTICE: {text}")
        if args.json_out is not None:
            args.json_out.parent.mkdir(parents=True, exist_ok=True)
            args.json_out.write_text(
                json.dumps(
                    {
                        "args": {k: str(v) for k, v in vars(args).items()},
                        "versions": _versions(),
                        "results": [asdict(m) for m in run.results],
                        "checks": checks,
                    },
                    indent=2,
                )
            )
            print(f"figures written to {args.json_out}")
        print(f"\nRerun:\n{rerun}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
