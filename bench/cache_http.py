"""The http part of bench/cache.py: exact cache hits through HTTP against the bare ASGI app.

Each server (daphne, uvicorn) serves the bare app and a BeastMode gateway; wrk sends one
identical body once a sample of responses shows it is an exact hit, then unique bodies (misses,
passed through) for contrast. Judged: daphne exact-hit req/s against the bare app's.
"""

from __future__ import annotations

import argparse
import os
import time

from bench.cache_common import (
    TARGET_HIT_VS_BARE,
    Report,
    post,
    start_gateway,
    verdict,
)
from bench.gateway import (
    REPO,
    Measurement,
    Run,
    Target,
    free_port,
    measure,
    request_body,
    server_argv,
    wait_ready,
)

SAME_MARKER = "00-0000000000"  # the marker bench/gateway.py's LUA_SAME sends


def ensure_exact_hit(port: int, key: str, samples: int = 5) -> tuple[bool, str]:
    """Store the answer of the wrk body (one warm-up request), then check a sample of hits."""
    body = request_body("json", SAME_MARKER)
    first = post(port, key, body)
    if first.status != 200:
        return False, f"warm-up request: HTTP {first.status} {first.body[:200]!r}"
    time.sleep(0.2)
    seen = [post(port, key, body) for _ in range(samples)]
    headers = [f"{r.cache}/{r.tier}" for r in seen]
    ok = all(r.status == 200 and r.cache == "exact" for r in seen)
    return ok, f"warm-up {first.cache}; sample {', '.join(headers)}"


def part_http(
    run: Run,
    args: argparse.Namespace,
    upstream: Target,
    key: str,
    env: dict[str, str],
    report: Report,
) -> None:
    hits: dict[tuple[str, int], Measurement] = {}
    bares: dict[tuple[str, int], Measurement] = {}
    misses: dict[tuple[str, int], Measurement] = {}
    same = argparse.Namespace(body="same", warmup=args.warmup, duration=args.duration)
    unique = argparse.Namespace(body="unique", warmup=args.warmup, duration=args.duration)
    for server in args.servers:
        print(f"\n== http: {server} ==", flush=True)
        bare_name, gw_name = f"bare-{server}", f"gateway-{server}"
        bare = Target("bare", free_port(), "sk-bare-000000000000000000000000")
        run.procs.start(
            bare_name, server_argv(server, "bench.bare_asgi:app", bare.port), REPO, dict(os.environ)
        )
        try:
            ready = wait_ready(run.procs, bare_name, bare, timeout=30)
            if not ready.ok:
                report.notice(f"bare app under {server} did not come up: {ready.detail}")
                continue
            gateway = start_gateway(run, gw_name, server, key, env)
            hit = Target("hit", gateway.port, key)
            miss = Target("miss", gateway.port, key)
            for conc in args.concurrency:
                ok, detail = ensure_exact_hit(gateway.port, key)
                print(f"  check exact hits c={conc}: {'ok' if ok else 'FAILED'} ({detail})")
                bares[server, conc] = measure(
                    server, server, bare, "json", conc, same, run.work_dir
                )
                if not ok:
                    report.notice(f"{server}: responses are not exact hits ({detail})")
                    continue
                hits[server, conc] = measure(server, server, hit, "json", conc, same, run.work_dir)
                ok, detail = ensure_exact_hit(gateway.port, key, samples=2)
                if not ok:
                    report.notice(f"{server} c={conc}: not exact hits after the run ({detail})")
            if not args.no_miss:
                for conc in args.concurrency:
                    misses[server, conc] = measure(
                        server, server, miss, "json", conc, unique, run.work_dir
                    )
        finally:
            run.procs.stop(bare_name)
            run.procs.stop(gw_name)

    print("\nhttp, json, one wrk thread per connection:")
    print(
        f"  {'server':<8} {'conc':>4}  {'target':<12} {'req/s':>8} {'P50':>8} {'P95':>8} "
        f"{'P99 ms':>8}  {'vs bare':>7}  errors"
    )
    for (server, conc), bare_m in bares.items():
        for label, m in (
            ("bare", bare_m),
            ("exact hit", hits.get((server, conc))),
            ("miss (pass)", misses.get((server, conc))),
        ):
            if m is None:
                continue
            ratio = m.rps / bare_m.rps if bare_m.rps else float("nan")
            print(
                f"  {server:<8} {conc:>4}  {label:<12} {m.rps:8.0f} {m.p50_ms:8.3f} "
                f"{m.p95_ms:8.3f} {m.p99_ms:8.3f}  {ratio:6.2f}x  "
                f"{m.errors or 0}{'' if m.latency_trusted else ' (L!)'}"
            )
    for (server, conc), bare_m in bares.items():
        hit_m = hits.get((server, conc))
        if hit_m is None:
            report.add(f"exact-hit req/s >= 50% bare ({server}, c={conc})", "not measured", "FAIL")
            continue
        ratio = hit_m.rps / bare_m.rps
        miss_m = misses.get((server, conc))
        measured = (
            f"{hit_m.rps:,.0f} vs bare {bare_m.rps:,.0f} req/s = {ratio:.2f}x; hit P50/P95/P99 "
            f"{hit_m.p50_ms:.2f}/{hit_m.p95_ms:.2f}/{hit_m.p99_ms:.2f} ms"
        )
        if miss_m is not None:
            measured += f"; miss {miss_m.rps:,.0f} req/s ({miss_m.rps / bare_m.rps:.2f}x)"
        errors = hit_m.error_count or bare_m.error_count
        if server == "daphne":
            result = "ERRORS" if errors else verdict(ratio >= TARGET_HIT_VS_BARE)
        else:
            result = f"context ({'would pass' if ratio >= TARGET_HIT_VS_BARE else 'below'})"
        report.add(f"exact-hit req/s >= 50% bare ({server}, c={conc})", measured, result)
