"""The limit check's own cost, in process: coroutines admitting and settling requests of
one limited key as fast as one event loop can, far from the key's limits, on the real Redis.

    . scripts/secrets.sh && env DATABASE_URL=postgres://postgres@127.0.0.1:5432/beastmode_dev \\
        REDIS_URL=redis://127.0.0.1:6379/11 .venv/bin/python bench/limits_admission.py

Prints admissions per second and the loop time each takes (admission, settlement and their
share of the Redis calls). The database gives the budget's spend once, when a first miss
seeds it (`--unseeded`: no miss, every request a hit at a period's start).
"""

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "beastmode.settings")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admissions", type=int, default=8000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--unseeded", action="store_true", help="no miss first: the spend stays unseeded"
    )
    args = parser.parse_args()

    import django

    django.setup()
    from beastmode.lib.chat_request import parse_chat_request
    from gateway import limits
    from routing.key_limits import key_limits
    from routing.registry import KeyConfig

    every_limit = key_limits(rpm=10**9, tpm=10**12, max_parallel=10**6, budget_usd=1e7,
                             budget_period="monthly", model_limits=None)  # fmt: skip
    key = KeyConfig(id=10**9, name="bench-limits", allowed_models=frozenset(), expires_at=None,
                    revoked=False, key_hash_prefix="benchlimits", limits=every_limit)  # fmt: skip
    chat = parse_chat_request(b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}')

    async def client(name: str, count: int) -> None:
        for i in range(count):
            usage = await limits.admit(key, "m", chat, f"{name}-{i}", 30.0)
            await asyncio.sleep(0)  # (the answer)
            limits.settle(usage, 0, 0.0)

    async def run() -> None:
        usage = await limits.admit(key, "m", chat, "seed", 30.0)
        if not args.unseeded:  # a miss: its charge seeds the budget's spend counter
            usage = await limits.charge(usage, key, "m", chat, "seed")
        limits.settle(usage, 10, 0.0)
        await asyncio.gather(*(client(f"warm{c}", 50) for c in range(args.concurrency)))
        each = args.admissions // args.concurrency
        started = time.perf_counter()
        await asyncio.gather(*(client(f"c{c}", each) for c in range(args.concurrency)))
        spent = time.perf_counter() - started
        await limits.close()
        done = each * args.concurrency
        print(f"{done / spent:.0f} admissions/s, {spent / done * 1e6:.1f} µs of loop time each "
              f"({args.concurrency} at a time)")  # fmt: skip

    asyncio.run(run())


if __name__ == "__main__":
    main()
