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
    means something) added one by one to a cache.semantic.vector_index.PartitionIndex (HNSW M=32,
    efSearch=96) with a time budget (``--million-budget``, default 600 s); past it, the
    build is redone with faiss directly (same index type and parameters, batches of 50k,
    all cores) and both times are reported. Then single-query top-4 search timings and
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
import csv
import gc
import http.client
import json
import math
import os
import secrets
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

_BENCH_DIR = Path(__file__).resolve().parent
# `python bench/cache.py` puts bench/ first on sys.path, where this file would shadow the
# `cache` package it measures: look modules up from the repository root instead.
if sys.path and Path(sys.path[0] or ".").resolve() == _BENCH_DIR:
    sys.path[0] = str(_BENCH_DIR.parent)

from bench.gateway import (  # noqa: E402
    CHAT_PATH,
    HOST,
    REPO,
    Measurement,
    ProcessGroup,
    Run,
    Target,
    _raise_exit,
    _versions,
    ensure_wrk,
    free_port,
    gateway_env,
    measure,
    prepare_gateway,
    request_body,
    server_argv,
    start_upstream,
    wait_ready,
    work_directory,
)

PARTS = ("http", "semantic", "million", "rss", "warming")
GATEWAY_APP = "beastmode.asgi:application"
SAME_MARKER = "00-0000000000"  # the marker bench/gateway.py's LUA_SAME sends
SEMANTIC_MODEL = "demo-semantic"
SLOW_MODEL = "demo-slow"
SLOW_DELAY_MS = 300
DIM = 384

# Targets from the issue.
TARGET_HIT_VS_BARE = 0.50
TARGET_LOOKUP_P50_MS = 3.0
TARGET_MILLION_P99_MS = 1.0
TARGET_RSS_MIB = 250.0

FALLBACK_QUESTIONS = [
    ("How do I reset my password?", "How can I reset my password?"),
    ("What is the capital of France?", "What's the capital city of France?"),
    ("How do I learn Python quickly?", "What is the fastest way to learn Python?"),
    ("Why is the sky blue?", "What makes the sky look blue?"),
    ("How can I lose weight fast?", "What is the quickest way to lose weight?"),
    ("What are the opening hours?", "When are you open?"),
    ("How do I cancel my subscription?", "How can I cancel my plan?"),
    ("What is machine learning?", "Can you explain what machine learning is?"),
    ("How do I make pancakes?", "What is a good pancake recipe?"),
    ("Which laptop is best for programming?", "What is the best laptop for coding?"),
]


@dataclass
class Row:
    target: str
    measured: str
    verdict: str


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    def add(self, target: str, measured: str, verdict: str) -> None:
        self.rows.append(Row(target, measured, verdict))

    def notice(self, text: str) -> None:
        self.notices.append(text)
        print(f"NOTICE: {text}", flush=True)


# --------------------------------------------------------------------------- helpers


def pct(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def p50_p99(values_ms: Sequence[float]) -> str:
    return f"P50 {pct(values_ms, 50):.3f} / P99 {pct(values_ms, 99):.3f} ms"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


@dataclass
class Reply:
    status: int
    cache: str | None
    tier: str | None
    body: bytes
    seconds: float


def post(port: int, api_key: str, body: bytes, timeout: float = 30.0) -> Reply:
    """One request on a new connection, timed from connect to the last byte."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(
            "POST",
            CHAT_PATH,
            body=body,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"},
        )
        response = conn.getresponse()
        payload = response.read()
        return Reply(
            response.status,
            response.getheader("x-beastmode-cache"),
            response.getheader("x-beastmode-cache-tier"),
            payload,
            time.perf_counter() - started,
        )
    finally:
        conn.close()


def chat_body(model: str, text: str) -> bytes:
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    return json.dumps(body, separators=(",", ":")).encode()


def manage(env: dict[str, str], *argv: str, timeout: float = 300) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip()[-1500:]
        raise RuntimeError(f"manage.py {' '.join(argv[:2])} failed ({done.returncode}): {tail}")
    return done.stdout


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM of a process, in KiB."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values


def load_pairs(data: Path) -> list[tuple[str, str]]:
    """(question1, question2) of the QQP tuning pairs; a small built-in list without them."""
    path = data / "qqp_tune_5k.tsv"
    if not path.exists():
        return list(FALLBACK_QUESTIONS)
    with path.open(newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [
            (row["question1"], row["question2"])
            for row in reader
            if row.get("question1") and row.get("question2")
        ]


def normalise(x: np.ndarray) -> np.ndarray:
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x


# --------------------------------------------------------------------------- services


@dataclass(frozen=True)
class Gateway(Target):
    pid: int = 0  # the server process itself: bin/daphne runs python directly


def start_gateway(run: Run, name: str, server: str, key: str, env: dict[str, str]) -> Gateway:
    port = free_port()
    proc = run.procs.start(name, server_argv(server, GATEWAY_APP, port), REPO, env)
    gateway = Gateway(name, port, key, pid=proc.pid)
    ready = wait_ready(run.procs, name, gateway, timeout=90)
    if not ready.ok:
        print(run.procs.log_tail(name))
        raise RuntimeError(f"{name} did not come up: {ready.detail[:300]}")
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    if server not in cmdline:
        raise RuntimeError(f"pid {proc.pid} is not the {server} server: {cmdline[:200]}")
    return gateway


# --------------------------------------------------------------------------- part: http


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


# --------------------------------------------------------------------------- part: rss


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


def write_models_yaml(run: Run, upstream: Target) -> Path:
    base = f"http://{HOST}:{upstream.port}"
    text = f"""models:
  - name: {SEMANTIC_MODEL}
    cache: {{semantic: "on"}}
    endpoints:
      - name: bench-semantic-upstream
        provider: openai
        base_url: {base}/v1
        model: demo-echo
        timeout_s: 30
  - name: {SLOW_MODEL}
    endpoints:
      - name: bench-slow-upstream
        provider: openai
        base_url: {base}/delay/{SLOW_DELAY_MS}/v1
        model: demo-echo
        timeout_s: 30
"""
    path = run.work_dir / "bench-models.yaml"
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- part: warming

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


# --------------------------------------------------------------------------- part: semantic


def part_semantic(args: argparse.Namespace, report: Report) -> None:
    from cache import keys
    from cache.semantic import similarity
    from cache.semantic.embedder import get_embedder
    from cache.semantic.vector_index import HNSW_MIN_ENTRIES, SemanticIndex

    print(f"\n== semantic lookup: {args.entries:,} entries in one partition ==", flush=True)
    pairs = load_pairs(args.data)
    if len(pairs) < 50:
        report.notice(f"{args.data}/qqp_tune_5k.tsv not found: built-in questions only")
    rng = np.random.default_rng(1)
    order = rng.permutation(len(pairs))
    pairs = [pairs[i] for i in order]
    started = time.perf_counter()
    embedder = get_embedder()
    print(f"  embedder loaded in {time.perf_counter() - started:.2f} s")
    n_real = min(len(pairs), args.real_entries, args.entries)
    started = time.perf_counter()
    real = embedder.embed(
        [keys.conversation_text([{"role": "user", "content": q1}]) for q1, _ in pairs[:n_real]]
    )
    print(f"  {n_real} real question1 embedded in {time.perf_counter() - started:.1f} s")
    n_random = args.entries - n_real
    noise = normalise(rng.standard_normal((n_random, DIM), dtype=np.float32))
    index = SemanticIndex(dim=DIM, max_entries=max(args.entries, 1_000_000))
    partition = "bench-partition"
    expires = time.time() + 86400
    real_at = set(rng.choice(args.entries, size=n_real, replace=False).tolist())
    started = time.perf_counter()
    r = q = 0
    for i in range(args.entries):
        if i in real_at:
            index.add(partition, f"real-{r}", pairs[r][0], expires, real[r])
            r += 1
        else:
            index.add(partition, f"rand-{q}", "random", expires, noise[q])
            q += 1
    build_s = time.perf_counter() - started
    kind = "HNSW" if args.entries >= HNSW_MIN_ENTRIES else "flat"
    print(f"  index built one add at a time in {build_s:.1f} s ({len(index):,} entries, {kind})")

    texts = [
        keys.conversation_text([{"role": "user", "content": q2}]) for _, q2 in pairs[: args.queries]
    ]
    while len(texts) < args.queries:  # the built-in list is short: ask it again
        texts += texts[: args.queries - len(texts)]
    floor = similarity.min_cosine(similarity.DEFAULT_THRESHOLD)
    for text in texts[:20]:  # warm-up: first calls allocate
        index.search(partition, embedder.embed([text])[0], k=similarity.TOP_K, floor=floor)
    embed_ms: list[float] = []
    search_ms: list[float] = []
    total_ms: list[float] = []
    above = changed = 0
    for text in texts:
        t0 = time.perf_counter_ns()
        vector = embedder.embed([text])[0]
        t1 = time.perf_counter_ns()
        found = index.search(partition, vector, k=similarity.TOP_K, floor=floor)
        t2 = time.perf_counter_ns()
        embed_ms.append((t1 - t0) / 1e6)
        search_ms.append((t2 - t1) / 1e6)
        total_ms.append((t2 - t0) / 1e6)
        full = index.search(partition, vector, k=similarity.TOP_K)
        servable = [(c.key, c.cosine) for c in full if c.cosine >= floor]
        above += bool(servable)
        changed += servable != [(c.key, c.cosine) for c in found if c.cosine >= floor]
    print(f"  {len(texts)} real questions, one at a time, one thread:")
    print(f"    embed          {p50_p99(embed_ms)}")
    print(f"    search top-{similarity.TOP_K}   {p50_p99(search_ms)}")
    print(f"    embed + search {p50_p99(total_ms)}")
    print(f"    (top-1 at or above the default threshold: {above}/{len(texts)}; servable")
    print(f"    candidates other than the full search's: {changed}/{len(texts)})")
    measured = (
        f"total {p50_p99(total_ms)} (embed P50 {pct(embed_ms, 50):.2f} / P99 "
        f"{pct(embed_ms, 99):.2f}; search P50 {pct(search_ms, 50):.3f} / P99 "
        f"{pct(search_ms, 99):.3f}); {len(texts)} queries, {len(index):,} entries {kind}"
    )
    report.add(
        f"semantic lookup P50 <= 3 ms at {args.entries // 1000}k",
        measured,
        verdict(pct(total_ms, 50) <= TARGET_LOOKUP_P50_MS),
    )
    del index, noise
    gc.collect()


# --------------------------------------------------------------------------- part: million

LATENT = 48
CLUSTERS = 4096


@dataclass
class Clustered:
    """Unit vectors from clusters in a LATENT-dimensional subspace, plus a little noise."""

    centers: np.ndarray
    projection: np.ndarray

    @classmethod
    def make(cls, rng: np.random.Generator) -> Clustered:
        centers = rng.standard_normal((CLUSTERS, LATENT), dtype=np.float32)
        projection = rng.standard_normal((LATENT, DIM), dtype=np.float32) / math.sqrt(LATENT)
        return cls(centers, projection)

    def sample(self, rng: np.random.Generator, n: int, out: np.ndarray | None = None) -> np.ndarray:
        out = np.empty((n, DIM), dtype=np.float32) if out is None else out
        for start in range(0, n, 100_000):
            stop = min(n, start + 100_000)
            labels = rng.integers(0, CLUSTERS, size=stop - start)
            latent = self.centers[labels] + 0.45 * rng.standard_normal(
                (stop - start, LATENT), dtype=np.float32
            )
            chunk = latent @ self.projection
            chunk += 0.04 * rng.standard_normal(chunk.shape, dtype=np.float32)
            out[start:stop] = normalise(chunk)
        return out


def exact_top1(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    best = np.full(len(queries), -np.inf, dtype=np.float32)
    best_id = np.zeros(len(queries), dtype=np.int64)
    for start in range(0, len(vectors), 100_000):
        scores = vectors[start : start + 100_000] @ queries.T
        top = scores.argmax(axis=0)
        value = scores[top, np.arange(len(queries))]
        better = value > best
        best[better] = value[better]
        best_id[better] = top[better] + start
    return best_id


def part_million(args: argparse.Namespace, report: Report) -> None:
    import faiss

    from cache.semantic.vector_index import HNSW_EF_SEARCH, HNSW_M, PartitionIndex

    n = args.million_n
    print(
        f"\n== FAISS at {n:,} entries (HNSW M={HNSW_M}, efSearch={HNSW_EF_SEARCH}) ==", flush=True
    )
    rng = np.random.default_rng(7)
    gen = Clustered.make(rng)
    started = time.perf_counter()
    vectors = gen.sample(rng, n)
    queries = gen.sample(rng, args.million_queries)
    print(f"  {n:,} clustered vectors generated in {time.perf_counter() - started:.1f} s")

    # 1. The product's path: PartitionIndex, one add at a time, within the budget.
    part = PartitionIndex(DIM)
    expires = time.time() + 86400
    started = time.perf_counter()
    added = 0
    budget_hit = False
    for i in range(n):
        part.add(f"v{i}", "", expires, vectors[i])
        added += 1
        if added % 50_000 == 0:
            elapsed = time.perf_counter() - started
            print(f"    PartitionIndex: {added:,} added, {elapsed:.0f} s", flush=True)
            if elapsed > args.million_budget and added < n:
                budget_hit = True
                break
    part_s = time.perf_counter() - started
    build_note = f"PartitionIndex build {part_s:.0f} s"
    search: Callable[[np.ndarray], int]
    if not budget_hit:
        print(f"  PartitionIndex built one add at a time in {part_s:.1f} s (HNSW: {part.is_hnsw})")
        now = time.time()

        def search(q: np.ndarray) -> int:
            found = part.search(q, 4, now)
            return int(found[0].key[1:]) if found else -1

        path = "PartitionIndex.search (top-4)"
    else:
        rate = added / part_s
        print(
            f"  PartitionIndex: {added:,} in {part_s:.0f} s, over the "
            f"{args.million_budget:.0f} s budget; building with faiss directly"
        )
        build_note = (
            f"PartitionIndex reached {added // 1000}k in {part_s:.0f} s (>= {n / rate:.0f} s "
            "projected for all)"
        )
        del part
        gc.collect()
        threads = os.cpu_count() or 1
        faiss.omp_set_num_threads(threads)
        inner = faiss.IndexHNSWFlat(DIM, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efSearch = HNSW_EF_SEARCH
        direct = faiss.IndexIDMap2(inner)
        started = time.perf_counter()
        for start in range(0, n, 50_000):
            stop = min(n, start + 50_000)
            direct.add_with_ids(vectors[start:stop], np.arange(start, stop, dtype=np.int64))
            if stop % 200_000 == 0:
                print(
                    f"    faiss: {stop:,} added, {time.perf_counter() - started:.0f} s", flush=True
                )
        direct_s = time.perf_counter() - started
        faiss.omp_set_num_threads(1)  # as vector_index.py: single queries on one thread
        build_note += f"; faiss batches of 50k, {threads} threads: {direct_s:.0f} s"
        print(f"  faiss built in {direct_s:.1f} s")

        def search(q: np.ndarray) -> int:
            _, ids = direct.search(q.reshape(1, -1), 4)
            return int(ids[0][0])

        path = "faiss IndexIDMap2(HNSWFlat).search (top-4)"

    truth = exact_top1(vectors, queries)
    for q in queries[:50]:
        search(q)
    timings: list[float] = []
    got = np.empty(len(queries), dtype=np.int64)
    extra = gen.sample(rng, args.million_timed)
    for i, q in enumerate(queries):
        t0 = time.perf_counter_ns()
        got[i] = search(q)
        timings.append((time.perf_counter_ns() - t0) / 1e6)
    for q in extra:
        t0 = time.perf_counter_ns()
        search(q)
        timings.append((time.perf_counter_ns() - t0) / 1e6)
    recall = float((got == truth).mean())
    print(f"  {path}: {len(timings)} single queries, {p50_p99(timings)}, max {max(timings):.3f} ms")
    print(f"  recall@1 vs exact search: {recall:.3f} on {len(queries)} held-out queries")
    measured = (
        f"{p50_p99(timings)} ({len(timings)} queries, {path}); recall@1 {recall:.3f} "
        f"({len(queries)} q); {build_note}"
    )
    if n >= 1_000_000:
        result = verdict(pct(timings, 99) <= TARGET_MILLION_P99_MS)
    else:
        result = f"n/a ({n:,} entries only)"
    report.add(f"FAISS search P99 <= 1 ms at {n / 1e6:g}M", measured, result)
    del vectors
    gc.collect()


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
    parser.add_argument(
        "--million-budget",
        type=float,
        default=600.0,
        help="million: s for the PartitionIndex build before faiss directly (600)",
    )
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
