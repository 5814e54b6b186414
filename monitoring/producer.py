"""One snapshot producer per deployment: every MONITORING_PUSH_INTERVAL_S it computes each
window's snapshot once and sends it to that window's group; consumers only forward it.

The producer runs as a task in a server process, started by the first dashboard that
connects (neither daphne nor Channels runs ASGI lifespan). With several processes they
elect one through a lock in the Django cache (Redis in production), so 50 dashboards
across the deployment still cost one computation per window per tick.
"""

import asyncio
import contextlib
import logging
import secrets

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.cache import cache

from monitoring import metrics, recorder
from monitoring.snapshot import WINDOWS, DashboardSnapshot, compute

log = logging.getLogger(__name__)
LEADER_KEY = "bm:monitoring:producer"
_token = secrets.token_hex(8)
_task: asyncio.Task[None] | None = None
computations = [0]  # snapshots computed by this process (tests read it)


def group_name(window: str) -> str:
    return f"monitoring.{window}"


def ensure_running() -> None:
    global _task
    if _task is None or _task.done():
        _task = asyncio.get_running_loop().create_task(_run_forever())


async def latest(window: str) -> DashboardSnapshot:
    """The window's newest snapshot: the producer's, wherever it runs (it shares each one
    through the Django cache, Redis in production); else computed here and now."""
    return await database_sync_to_async(_shared_or_computed)(window)


def _shared_or_computed(window: str) -> DashboardSnapshot:
    shared: DashboardSnapshot | None = None
    with contextlib.suppress(Exception):  # no shared cache reachable: compute here
        shared = cache.get(_shared_key(window))
    return shared if shared is not None else _compute(window)


def _share(window: str, snapshot: DashboardSnapshot, interval_s: float) -> None:
    """Keep the producer's snapshot for every process's next first frame; it expires
    soon after the producer stops, so a snapshot read is never older than a few ticks."""
    with contextlib.suppress(Exception):
        cache.set(_shared_key(window), snapshot, max(2, int(interval_s * 3)))


def _shared_key(window: str) -> str:
    return f"bm:monitoring:snapshot:{window}"


def _compute(window: str) -> DashboardSnapshot:
    computations[0] += 1
    metrics.observe_snapshot()
    return compute(window)


async def _run_forever() -> None:
    layer = get_channel_layer()
    loop = asyncio.get_running_loop()
    interval_s = settings.MONITORING_PUSH_INTERVAL_S
    while True:
        started = loop.time()
        try:
            if await database_sync_to_async(_lead)(interval_s):
                # This process's own finished requests are in this tick, not the next.
                await database_sync_to_async(recorder.flush_or_leave_to_writer)()
                for window in WINDOWS:
                    snapshot = await database_sync_to_async(_compute)(window)
                    await database_sync_to_async(_share)(window, snapshot, interval_s)
                    message = {"type": "snapshot.push", "snapshot": snapshot}
                    await layer.group_send(group_name(window), message)
        except Exception:
            log.exception("monitoring snapshot failed; trying again next tick")
        await asyncio.sleep(max(0.0, interval_s - (loop.time() - started)))


def _lead(interval_s: float) -> bool:
    """Hold (or take over) the producer lock; False while another process holds it."""
    ttl_s = max(2, int(interval_s * 3))
    try:
        if cache.add(LEADER_KEY, _token, ttl_s):
            return True
        if cache.get(LEADER_KEY) == _token:
            cache.touch(LEADER_KEY, ttl_s)
            return True
        return False
    except Exception:
        return True  # no shared cache reachable: better two producers than none
