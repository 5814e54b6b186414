"""The warming part of bench/cache.py: first requests of warmed prompts against cold ones.

A model behind a slow upstream gets WarmupPrompt rows, ``manage.py warmcache`` warms them
while a daphne gateway runs, then the first request of each warmed prompt and of as many cold
prompts is timed over HTTP. Judged: every warmed prompt is a hit, and faster than cold.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import time

from bench.cache_common import (
    SLOW_DELAY_MS,
    SLOW_MODEL,
    Report,
    chat_body,
    manage,
    pct,
    post,
    start_gateway,
    verdict,
    write_models_yaml,
)
from bench.gateway import Run, Target

WARM_CODE = """
import json, os
from gateway.models import WarmupPrompt
from routing.models import ServiceKey
key = ServiceKey.objects.get(name="demo")
for text in json.loads(os.environ["BENCH_WARM_PROMPTS"]):
    WarmupPrompt.objects.create(
        service_key=key, model=os.environ["BENCH_WARM_MODEL"],
        messages=[{"role": "user", "content": text}],
    )
print(WarmupPrompt.objects.count())
"""


def part_warming(
    run: Run,
    args: argparse.Namespace,
    upstream: Target,
    key: str,
    env: dict[str, str],
    report: Report,
) -> None:
    print(f"\n== warming: {SLOW_MODEL} (upstream delay {SLOW_DELAY_MS} ms) ==", flush=True)
    manage(env, "import_models", str(write_models_yaml(run, upstream)))  # idempotent
    gateway = start_gateway(run, "gateway-warming", "daphne", key, env)
    try:
        warm_and_time(args, gateway, key, env, report)
    finally:
        run.procs.stop("gateway-warming")


def warm_and_time(
    args: argparse.Namespace, gateway: Target, key: str, env: dict[str, str], report: Report
) -> None:
    tag = secrets.token_hex(3)
    n = args.warm_n
    warmed = [
        f"Warm question {i} ({tag}): what are the opening hours of shop {i}?" for i in range(n)
    ]
    cold = [f"Cold question {i} ({tag}): what are the opening hours of shop {i}?" for i in range(n)]
    prompt_env = {**env, "BENCH_WARM_PROMPTS": json.dumps(warmed), "BENCH_WARM_MODEL": SLOW_MODEL}
    manage(prompt_env, "shell", "-c", WARM_CODE)
    started = time.perf_counter()
    out = manage(env, "warmcache", timeout=600)
    warm_s = time.perf_counter() - started
    stored = sum(1 for line in out.splitlines() if line.rstrip().endswith(": stored"))
    print(f"  warmcache: {stored}/{n} stored in {warm_s:.1f} s")
    if stored != n:
        report.notice(f"warmcache stored {stored} of {n}: {out[-500:]}")
    post(gateway.port, key, chat_body(SLOW_MODEL, f"prime {tag}"))  # route + upstream session
    warm_ms: list[float] = []
    cold_ms: list[float] = []
    warm_headers: list[str] = []
    cold_headers: list[str] = []
    for w, c in zip(warmed, cold, strict=True):
        reply = post(gateway.port, key, chat_body(SLOW_MODEL, w))
        warm_ms.append(reply.seconds * 1000)
        warm_headers.append(f"{reply.cache}/{reply.tier}" if reply.status == 200 else "error")
        reply = post(gateway.port, key, chat_body(SLOW_MODEL, c))
        cold_ms.append(reply.seconds * 1000)
        cold_headers.append(f"{reply.cache}" if reply.status == 200 else "error")
    warm_counts = {h: warm_headers.count(h) for h in sorted(set(warm_headers))}
    cold_counts = {h: cold_headers.count(h) for h in sorted(set(cold_headers))}
    print(
        f"  warmed first requests: median {statistics.median(warm_ms):.2f} ms, "
        f"P90 {pct(warm_ms, 90):.2f} ms, max {max(warm_ms):.2f} ms; {warm_counts}"
    )
    print(
        f"  cold first requests:   median {statistics.median(cold_ms):.2f} ms, "
        f"P90 {pct(cold_ms, 90):.2f} ms, max {max(cold_ms):.2f} ms; {cold_counts}"
    )
    all_hits = all(h.startswith("exact") for h in warm_headers)
    faster = statistics.median(warm_ms) < statistics.median(cold_ms)
    measured = (
        f"warmed median {statistics.median(warm_ms):.1f} ms vs cold "
        f"{statistics.median(cold_ms):.1f} ms (N={n} each); warmed: {warm_counts}; "
        f"warmcache {warm_s:.1f} s"
    )
    report.add(
        "warmed prompt's 1st request is a hit, < cold", measured, verdict(all_hits and faster)
    )
