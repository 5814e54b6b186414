"""The rss part of bench/cache.py: resident memory of real gateway processes.

Daphne gateways are started, sent a few requests and measured from /proc/<pid>/status, first
with no semantic route, then with a semantic model (the embedder preloaded at start) after a
few paraphrases. Judged: median VmRSS with the embedder loaded.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import time
from pathlib import Path

from bench.cache_common import (
    SEMANTIC_MODEL,
    TARGET_RSS_MIB,
    Report,
    chat_body,
    manage,
    post,
    start_gateway,
    verdict,
    write_models_yaml,
)
from bench.gateway import Run, Target


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM of a process, in KiB."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values


RSS_PAIRS = [
    ("What is the capital of France?", "What's the capital city of France?"),
    ("How do I reset my password?", "How can I reset my password?"),
    ("How do I learn Python quickly?", "What is the fastest way to learn Python?"),
]


def rss_once(run: Run, key: str, env: dict[str, str], semantic: bool) -> tuple[dict[str, int], int]:
    """Start a daphne gateway, send a few requests, read its VmRSS / VmHWM (KiB); stop it.

    With ``semantic``, the requests include RSS_PAIRS (first a miss, then its paraphrase);
    also returns how many paraphrases came back ``x-beastmode-cache: semantic``."""
    name = "gateway-rss-on" if semantic else "gateway-rss-off"
    gateway = start_gateway(run, name, "daphne", key, env)
    served = 0
    try:
        tag = secrets.token_hex(4)
        if semantic:
            # From the second process on, the first questions are exact hits (stored in L3
            # by the previous one) and the paraphrases still go through the embedder.
            for first, paraphrase in RSS_PAIRS:
                post(gateway.port, key, chat_body(SEMANTIC_MODEL, first))
                time.sleep(0.3)  # the store (embed + index) runs in a worker thread
                reply = post(gateway.port, key, chat_body(SEMANTIC_MODEL, paraphrase))
                served += reply.cache == "semantic"
            post(gateway.port, key, chat_body(SEMANTIC_MODEL, f"one more question {tag}"))
        for i in range(20):
            text = "rss same" if i % 2 else f"rss {i} {tag}"
            post(gateway.port, key, chat_body("demo", text))
        time.sleep(2)
        status = proc_status(gateway.pid)
    finally:
        run.procs.stop(name)
    return status, served


def part_rss(
    run: Run,
    args: argparse.Namespace,
    upstream: Target,
    key: str,
    env: dict[str, str],
    report: Report,
) -> None:
    mib = 1024.0
    print(f"\n== rss: {args.rss_runs} daphne gateway(s) with no semantic route ==", flush=True)
    off: list[float] = []
    for _ in range(args.rss_runs):
        status, _ = rss_once(run, key, env, semantic=False)
        off.append(status["VmRSS"] / mib)
        print(f"  VmRSS {status['VmRSS'] / mib:.1f} MiB, VmHWM {status['VmHWM'] / mib:.1f} MiB")
    manage(env, "import_models", str(write_models_yaml(run, upstream)))
    print(f"\n== rss: {args.rss_runs} daphne gateway(s), {SEMANTIC_MODEL} semantic on ==")
    on: list[float] = []
    peaks: list[float] = []
    served: list[int] = []
    for _ in range(args.rss_runs):
        status, hits = rss_once(run, key, env, semantic=True)
        on.append(status["VmRSS"] / mib)
        peaks.append(status["VmHWM"] / mib)
        served.append(hits)
        print(
            f"  VmRSS {status['VmRSS'] / mib:.1f} MiB, VmHWM {status['VmHWM'] / mib:.1f} MiB; "
            f"{hits}/{len(RSS_PAIRS)} paraphrases served semantic"
        )
    if not any(served):
        report.notice("no paraphrase came back semantic: was the embedder loaded?")
    measured = (
        f"median {statistics.median(on):.1f} MiB (runs {', '.join(f'{v:.1f}' for v in on)}; "
        f"peak VmHWM {max(peaks):.0f}) with embedder; semantic off: median "
        f"{statistics.median(off):.1f} MiB; paraphrases served semantic {sum(served)}/"
        f"{len(RSS_PAIRS) * len(served)}"
    )
    report.add(
        "gateway RSS, embedder loaded <= 250 MiB (daphne)",
        measured,
        verdict(statistics.median(on) <= TARGET_RSS_MIB),
    )
