"""The semantic index at scale: a node restarted with N entries in L3.

Rerun (1M: about 5 min to seed, then the measured start; `--keep` keeps the seeded database
for the next run):

    env DATABASE_URL=postgres://postgres@127.0.0.1:5432/bm_semantic \\
        .venv/bin/python bench/cluster_index.py [--entries 100000] [--keep]

A private database (`<DATABASE_URL's name>_cluster_index_<N>`) gets N L3 rows in one partition,
written with COPY: N-1 synthetic rows (random unit vectors: the embedder is not run on a
million texts; random vectors are the hardest case for HNSW) and one real answer to "What is
the capital city of France?" with its real embedding. A fresh process (the measured one)
then starts as a gateway process does (`index_sync.start`, no L2) and asks, through
`cache.service.lookup`, for that answer exactly (its L1 copy dropped after each try, so each
goes to L3) and for a paraphrase of it, until both hit. Figures, in seconds from the spawn
of that process unless named otherwise:

- exact_hit_s, semantic_hit_s: first exact hit; first semantic hit of the paraphrase;
  exact_max_ms: the slowest exact lookup while the index loaded;
- loaded_s: every vector indexed (flat search from then on); loaded_cpu_s: the process's
  CPU time then (all threads; what a busy machine does not inflate); graph_s: the HNSW
  graph built in the background and swapped in;
- index_bytes_per_entry: the index's own count once its graph is built (int8 codes, graph
  links, row arrays, and the keys list, dict and strings by `sys.getsizeof`);
  rss_start_mib / rss_loaded_mib / rss_graph_mib: the process's RSS before the index
  starts loading, once loaded, and with the graph (the embedder loads meanwhile: ~100 MiB);
- rebuild_max_wait_ms: the longest wait for the index lock while the graph was built (a
  probe that only takes the lock, every 2 ms); rebuild_search_max_ms / _p50_ms: lookups
  (random vectors) meanwhile, which scan the flat rows until the swap; swap_ms: the
  longest hold of the lock by the rebuild (snapshot or swap).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DIM = 384
QUESTION = "What is the capital city of France?"
PARAPHRASE = "What's the capital of France?"
NAMESPACE, MODEL = "bench", "bench-model"


def run(entries: int, *, keep: bool = False) -> dict[str, float]:
    """Seed a private database with `entries` L3 rows, measure a fresh process on it."""
    url = private_database_url(entries)
    if not _seeded(url, entries):
        _recreate(url)
        _child(url, "--seed", entries)
    try:
        return _child(url, "--measure", entries)
    finally:
        if not keep:
            _drop(url)


def private_database_url(entries: int) -> str:
    base = urlsplit(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/beastmode"))
    return urlunsplit(base._replace(path=f"{base.path.rstrip('/')}_cluster_index_{entries}"))


# --------------------------------------------------------------------------- parent


def _admin(url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(
        urlunsplit(urlsplit(url)._replace(path="/postgres")), autocommit=True
    ) as c:
        c.execute(sql)


def _name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def _recreate(url: str) -> None:
    _drop(url)
    _admin(url, f'CREATE DATABASE "{_name(url)}"')


def _drop(url: str) -> None:
    _admin(url, f'DROP DATABASE IF EXISTS "{_name(url)}" WITH (FORCE)')


def _seeded(url: str, entries: int) -> bool:
    import psycopg

    try:
        with psycopg.connect(url) as c:
            found = c.execute("SELECT count(*) FROM cache_cacheentry").fetchone()
            return found is not None and found[0] == entries
    except psycopg.Error:
        return False


def _child(url: str, mode: str, entries: int) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}  # no L2: exact hits from L3
    env.update(DATABASE_URL=url, DJANGO_SETTINGS_MODULE="beastmode.settings_test")
    command = [
        sys.executable,
        __file__,
        mode,
        "--entries",
        str(entries),
        "--spawned",
        repr(time.time()),
    ]
    done = subprocess.run(
        command, env=env, cwd=REPO, stdout=subprocess.PIPE, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{mode} failed ({done.returncode})")
    lines = done.stdout.strip().splitlines()
    print("\n".join(lines[:-1]), flush=True)
    figures: dict[str, float] = json.loads(lines[-1])
    return figures


# --------------------------------------------------------------------------- children


def _setup_django() -> None:
    sys.path.insert(0, str(REPO))
    from beastmode.lib import runtime

    runtime.limit_malloc_arenas()  # as beastmode/asgi.py starts a gateway process
    import django

    django.setup()


def _probe_plan(text: str) -> Any:
    from cache import keys, service

    body = {"model": MODEL, "messages": [{"role": "user", "content": text}]}
    return service.CachePlan(
        key=keys.derive(NAMESPACE, MODEL, body), request=body, request_id="bench", read=True,
        store=False, ttl_s=3600, max_age_s=None, semantic_mode="on", threshold=0.95,
    )  # fmt: skip


def seed(entries: int) -> dict[str, float]:
    """(In the seeding child.) Migrate, then COPY the rows in binary."""
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from cache.semantic.embedder import get_embedder

    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    probe = _probe_plan(QUESTION)
    vector = get_embedder().embed([probe.key.conversation_text])[0]
    columns = ["key", "namespace", "model", "partition", "prompt_text", "semantic_eligible",
               "request", "response", "embedding", "size_bytes", "tokens_in", "tokens_out",
               "endpoint", "hits", "created_at", "expires_at", "updated_at"]  # fmt: skip
    types = ["text"] * 5 + ["bool", "jsonb", "jsonb", "bytea", "int4", "int4", "int4", "text"]
    types += ["int4", "timestamptz", "timestamptz", "timestamptz"]
    now = timezone.now()
    later = now + timedelta(days=1)
    answer = json.dumps({"choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": QUESTION}}]})  # fmt: skip
    rng = np.random.default_rng(16)
    connection.ensure_connection()
    raw = connection.connection
    assert raw is not None
    with raw.cursor() as cursor:
        sql = f"COPY cache_cacheentry ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
        with cursor.copy(sql) as copy:
            copy.set_types(types)
            copy.write_row([probe.key.exact, NAMESPACE, MODEL, probe.key.partition,
                            probe.key.conversation_text, True, "{}", answer,
                            vector.astype(np.float32).tobytes(), 100, 1, 1, "", 0,
                            now, later, now])  # fmt: skip
            for start in range(1, entries, 50_000):
                stop = min(entries, start + 50_000)
                block = rng.standard_normal((stop - start, DIM), dtype=np.float32)
                block /= np.linalg.norm(block, axis=1, keepdims=True)
                for i, row in enumerate(block, start):
                    key = hashlib.sha256(b"synthetic %d" % i).hexdigest()
                    copy.write_row([key, NAMESPACE, MODEL, probe.key.partition,
                                    f"user: synthetic {i}", True, "{}", answer, row.tobytes(),
                                    100, 1, 1, "", 0, now, later, now])  # fmt: skip
                print(f"  seeded {stop:,} rows, {time.perf_counter() - started:.0f} s", flush=True)
    raw.commit()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE cache_cacheentry")
    return {"seed_s": time.perf_counter() - started}


def _rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def measure(entries: int, spawned: float) -> dict[str, float]:
    """(In the measured child.) Start as a gateway process does; time the first hits."""
    import asyncio
    import threading

    from cache import service
    from cache.layers import tiers
    from cache.semantic import index_sync, vector_index

    since = lambda: time.time() - spawned  # noqa: E731
    figures: dict[str, float] = {}

    def note(name: str, value: float) -> None:
        """Keep a figure, and show it at once (a 1M run takes a while)."""
        figures[name] = value
        print(f"  {name:24s} {value:12.2f}", file=sys.stderr, flush=True)

    note("django_s", since())
    exact, paraphrase = _probe_plan(QUESTION), _probe_plan(PARAPHRASE)
    from beastmode.lib import runtime

    runtime.freeze_startup_objects()  # as beastmode/asgi.py does, after its start
    runtime.shorten_gil_switch_interval()
    index = vector_index.index()
    note("rss_start_mib", _rss() / 2**20)
    index_sync.start(preload_embedder=lambda: True)
    exact_ms: list[float] = []
    loop = asyncio.new_event_loop()
    while "semantic_hit_s" not in figures or "loaded_s" not in figures:
        loading = "loaded_s" not in figures
        if "exact_hit_s" not in figures or loading:
            tiers().l1.delete(exact.key.exact)
            t0 = time.perf_counter()
            hit = loop.run_until_complete(service.lookup(exact))
            if loading:
                exact_ms.append((time.perf_counter() - t0) * 1e3)
            if hit is not None and "exact_hit_s" not in figures:
                note("exact_hit_s", since())
        if "semantic_hit_s" not in figures:
            hit = loop.run_until_complete(service.lookup(paraphrase))
            if hit is not None and hit.kind == "semantic":
                note("semantic_hit_s", since())
        if loading and index_sync.known_keys.loaded and len(index) >= entries:
            note("loaded_s", since())
            note("loaded_cpu_s", time.process_time())
            note("rss_loaded_mib", _rss() / 2**20)
        time.sleep(0.01)
    note("exact_max_ms", max(exact_ms, default=0.0))

    # The graph is being built in the background: how long do lookups wait meanwhile?
    waits, searches = [], []
    rng = np.random.default_rng(1)
    stop = threading.Event()

    lock = index._lock

    def probe_lock() -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            with lock:
                pass
            waits.append((time.perf_counter() - t0) * 1e3)
            time.sleep(0.002)

    prober = threading.Thread(target=probe_lock, daemon=True)
    prober.start()
    partition = exact.key.partition
    shown = time.monotonic()
    while index.is_rebuilding():
        if time.monotonic() - shown > 60:
            shown = time.monotonic()
            longest = max(waits, default=0.0)
            progress = f"{since():.0f} s, {len(searches)} lookups, longest wait {longest:.1f} ms"
            print(f"  (building the graph: {progress})", file=sys.stderr, flush=True)
        query = rng.standard_normal(DIM, dtype=np.float32)
        query /= np.linalg.norm(query)
        t0 = time.perf_counter()
        index.search(partition, query, k=4, floor=0.9075)
        searches.append((time.perf_counter() - t0) * 1e3)
        time.sleep(0.01)
    stop.set()
    prober.join()
    note("graph_s", since())
    note("rebuild_max_wait_ms", max(waits, default=0.0))
    note("rebuild_search_max_ms", max(searches, default=0.0))
    note("rebuild_search_p50_ms", float(np.median(searches)) if searches else 0.0)
    note("swap_ms", index.longest_swap_ms)
    after = []
    for _ in range(200):
        query = rng.standard_normal(DIM, dtype=np.float32)
        t0 = time.perf_counter()
        index.search(partition, query / np.linalg.norm(query), k=4, floor=0.9075)
        after.append((time.perf_counter() - t0) * 1e3)
    note("search_p50_ms", float(np.median(after)))
    note("index_bytes_per_entry", index.nbytes() / len(index))
    note("rss_graph_mib", _rss() / 2**20)

    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--keep", action="store_true", help="keep the seeded database")
    parser.add_argument("--seed", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--spawned", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seed or args.measure:
        _setup_django()
        figures = seed(args.entries) if args.seed else measure(args.entries, args.spawned)
        print(json.dumps(figures))
        return
    print(f"== semantic index at scale: {args.entries:,} L3 entries in one partition ==")
    figures = run(args.entries, keep=args.keep)
    for name, value in figures.items():
        print(f"  {name:24s} {value:12.2f}")


if __name__ == "__main__":
    main()
