"""Graceful shutdown, under daphne and under uvicorn.

On SIGTERM (or Ctrl-C) a node stops taking new connections, lets the requests and streams
in flight finish for up to SHUTDOWN_GRACE_S less a reserve, then writes out what it holds
(the cache's lower tiers, the request records: to the spool if the database cannot take
them in time) and exits 0 before the grace ends.

uvicorn drains by itself with `--timeout-graceful-shutdown` (the docs and `make run` pass
the grace less the reserve), then sends lifespan.shutdown, where `write_out` runs. daphne
cancels every request at once on SIGTERM, so under daphne `take_over_sigterm` takes the
signal once the reactor runs and does the same.
"""

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from django.conf import settings

from cache.writer import lower_writer
from monitoring import recorder
from routing import calls

log = logging.getLogger(__name__)

# The part of the grace kept for writing out (the rest is for the requests in flight).
WRITE_OUT_RESERVE_S = 6.0
in_flight = 0  # HTTP requests in progress (changed on the event loop only)
_draining = False
_drain: "asyncio.Task[None] | None" = None


async def write_out(deadline: float) -> None:
    """Close upstream connections, write the cache's lower tiers and the records by
    `deadline` (monotonic); records the database has not taken by then go to the spool."""
    with contextlib.suppress(Exception):
        await calls.close_connections()
    # The records first; the cache's lower tiers with what time is left (L3 is skipped
    # while its breaker is open).
    await asyncio.to_thread(recorder.write_out, deadline)
    writing = threading.Thread(target=lower_writer.flush, name="write-out", daemon=True)
    writing.start()
    while writing.is_alive() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def take_over_sigterm() -> None:
    """Under daphne: drain on SIGTERM and SIGINT instead of cancelling every request."""
    if "daphne.server" not in sys.modules:
        return

    def install() -> None:
        loop = asyncio.get_event_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, _begin_drain)

    _reactor().callWhenRunning(install)


def _begin_drain() -> None:
    global _draining, _drain
    from twisted.internet import tcp

    if _draining:  # a second Ctrl-C: stop waiting
        log.warning("second signal: exiting now, without waiting for the requests in flight")
        os._exit(1)
    _draining = True
    for reader in _reactor().getReaders():  # new connections are refused: balancers move on
        if isinstance(reader, tcp.Port):
            reader.stopListening()  # type: ignore[no-untyped-call]
    log.info("shutting down: draining %d requests in flight", in_flight)
    _drain = asyncio.get_event_loop().create_task(_drain_and_stop())


async def _drain_and_stop() -> None:
    ends = time.monotonic() + settings.SHUTDOWN_GRACE_S
    # Past the grace the process is gone whatever holds it (a thread stuck in a write).
    watchdog = threading.Timer(settings.SHUTDOWN_GRACE_S - 0.5, os._exit, (0,))
    watchdog.daemon = True
    watchdog.start()
    while in_flight and time.monotonic() < ends - WRITE_OUT_RESERVE_S:
        await asyncio.sleep(0.05)
    if in_flight:
        log.warning("grace period over: %d requests still in flight are cut", in_flight)
    await write_out(ends - 1.0)
    _reactor().stop()


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor
