"""What one request record costs /metrics on the hot path (`metrics.observe_request`).

    .venv/bin/python bench/metrics_observe.py                    # this checkout
    git show cbd3a58:monitoring/metrics.py > /tmp/old_metrics.py
    .venv/bin/python bench/metrics_observe.py --module /tmp/old_metrics.py   # another version

Times a miss (one upstream attempt, tokens, cost) and an exact hit (saved tokens and cost)
with timeit, best of 5 runs of 200,000 calls, in a throw-away var dir (no database is
touched). The machine is shared: compare versions in the same minute.
"""

import argparse
import importlib.util
import os
import sys
import tempfile
import timeit
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--module", type=Path, help="a metrics.py to time instead of ours")
    parser.add_argument("--number", type=int, default=200_000, help="calls per run")
    args = parser.parse_args()
    var_dir = tempfile.mkdtemp(prefix="bm-metrics-bench-")
    os.environ.update(BEASTMODE_VAR_DIR=var_dir, DJANGO_SETTINGS_MODULE="beastmode.settings_test")
    for name in ("DATABASE_URL", "REDIS_URL", "BEASTMODE_METRICS_DIR"):
        os.environ.pop(name, None)
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)  # (the venv may put the working directory on the path too)
    import django

    django.setup()
    from monitoring.records import request_row

    metrics = _load(args.module) if args.module else importlib.import_module("monitoring.metrics")
    now = datetime.now(UTC)
    common = {"created_at": now, "path": "/v1/chat/completions", "outcome": "success",
              "status_code": 200, "model": "demo"}  # fmt: skip
    records = {
        "miss": request_row(
            request_id="miss", latency_ms=12.0, tokens_in=10, tokens_out=20, cost_usd=0.001,
            attempt_log=[{"endpoint": "ep", "error_class": None, "latency_ms": 10.0}],
            cache_outcome="miss", **common,
        ),
        "hit": request_row(
            request_id="hit", latency_ms=0.8, cache_outcome="exact", cache_tier="L1",
            saved_tokens_in=10, saved_tokens_out=20, cost_saved_usd=0.001, **common,
        ),
    }  # fmt: skip
    observe = metrics.observe_request
    for kind, record in records.items():
        runs = timeit.repeat(lambda r=record: observe(r), number=args.number, repeat=5)
        print(f"{kind}: {min(runs) / args.number * 1e6:.2f} µs per record")


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("metrics_under_test", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    main()
