"""CPU cost of one exact L1 hit through the API app, in process (no server, no socket).

    .venv/bin/python bench/hit_path.py [CHECKOUT]   # default: this checkout

CHECKOUT may be an older BeastMode clone (before gateway/ existed the API was
routing/api.py), so that two versions are compared on one machine in one sitting.
Prints the best of 5 x 5,000 hits; PROFILE=1 adds a cProfile of 5,000 more.
"""

import asyncio
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent.parent).resolve()
BODY = json.dumps({"model": "demo", "messages": [{"role": "user", "content": "hi"}]}).encode()
COMPLETION = {
    "id": "c",
    "object": "chat.completion",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1},
}


def set_up() -> tuple[Any, str]:
    """Django on a throw-away SQLite database, the model 'demo', a key, and the answer to
    BODY in L1; returns the API app and the key."""
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    os.environ.update(
        DJANGO_SETTINGS_MODULE="beastmode.settings_test", BEASTMODE_VAR_DIR=tempfile.mkdtemp()
    )
    for name in ("DATABASE_URL", "REDIS_URL", "PYTEST_XDIST_WORKER"):
        os.environ.pop(name, None)
    import django

    django.setup()
    import yaml
    from django.core.management import call_command

    from cache import service
    from cache.layers import tiers
    from routing import registry
    from routing.importer import import_models

    call_command("migrate", verbosity=0)
    endpoint = {"name": "e", "provider": "openai", "base_url": "http://127.0.0.1:9/v1",
                "model": "x", "timeout_s": 5}  # fmt: skip
    import_models(yaml.safe_dump({"models": [{"name": "demo", "endpoints": [endpoint]}]}))
    try:  # this layout
        from beastmode.lib.chat_request import parse_chat_request
        from gateway import api
        from routing.service_keys import create_service_key
    except ImportError:  # before session 10
        from routing.keys import create_service_key  # type: ignore[no-redef]
        from routing.validation import parse_chat_request  # type: ignore[no-redef]

        from routing import api  # type: ignore[no-redef]
    _, key = create_service_key("bench")
    snapshot = registry.reload()
    service_key = snapshot.authenticate(f"Bearer {key}")
    route = snapshot.resolve(service_key, "demo")
    chat = parse_chat_request(BODY)
    if hasattr(route, "cache_policy"):
        plan = service.plan(namespace=service_key.cache_namespace, policy=route.cache_policy,
                            chat=chat, cache_control=None)  # fmt: skip
    else:  # before session 10
        plan = service.plan(service_key, route, chat, None)  # type: ignore[call-arg]
    assert plan is not None
    tiers().l1.put(service.entry_for(plan, COMPLETION, "e", time.time()), time.time())
    return api, key


async def measure(api: Any, key: str) -> None:
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions",
             "headers": [(b"authorization", f"Bearer {key}".encode())]}  # fmt: skip
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def hits(n: int) -> None:
        for _ in range(n):
            await api.app(scope, receive, send)
        sent.clear()

    await hits(2000)
    await api.app(scope, receive, send)
    assert b'"hello"' in sent[-1]["body"], sent[-2:]
    best_s = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        await hits(5000)
        best_s = min(best_s, (time.perf_counter() - started) / 5000)
    print(f"{ROOT}: {best_s * 1e6:.1f} µs per exact L1 hit (best of 5 x 5,000)")
    if os.environ.get("PROFILE"):
        profile = cProfile.Profile()
        profile.enable()
        await hits(5000)
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    asyncio.run(measure(*set_up()))
    os._exit(0)  # the recorder's and the registry's threads need not wind down
