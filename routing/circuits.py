"""Circuits shared by every process: one that opens anywhere opens everywhere.

A process that opens a circuit writes until when it is open into a Redis hash (through the
Django cache's client); every process reads the hash every SYNC_INTERVAL_S, in a thread of
its own, and opens its own circuit until the same moment. Nothing touches Redis on a
request's path. With Redis away, each process decides alone.
"""

import json
import logging
import threading
import time
from collections.abc import Callable, Container
from typing import Any

from django.core.cache import cache

from routing import breaker

log = logging.getLogger(__name__)
KEY = "bm:circuits"
# A circuit opened anywhere is open everywhere within about twice this.
SYNC_INTERVAL_S = 0.2
_syncing: threading.Thread | None = None


def start(endpoint_ids: Callable[[], Container[int]]) -> None:
    """Sync this process's circuits with the others' from now on (once per process);
    `endpoint_ids` gives the endpoints this process routes to."""
    global _syncing
    if _syncing is not None or _redis() is None:
        return

    def sync_forever() -> None:
        while True:
            time.sleep(SYNC_INTERVAL_S)
            sync(endpoint_ids())

    _syncing = threading.Thread(target=sync_forever, name="circuit-sync", daemon=True)
    _syncing.start()


def sync(endpoint_ids: Container[int]) -> None:
    """Share the circuits this process opened, then open those of `endpoint_ids` that
    another process opened (off the event loop)."""
    client = _redis()
    if client is None:
        return
    now = time.time()
    try:
        while breaker.opened:
            endpoint_id, open_s, error_class = breaker.opened.popleft()
            circuit = {"until": now + open_s, "error": error_class}
            client.hset(KEY, str(endpoint_id), json.dumps(circuit))
        shared = client.hgetall(KEY)
        for field, value in shared.items():
            circuit = json.loads(value)
            if circuit["until"] <= now:
                client.hdel(KEY, field)
            elif int(field) in endpoint_ids:
                breaker.for_endpoint(int(field)).open_for(circuit["until"] - now, circuit["error"])
    except Exception:
        log.debug("shared circuits unavailable; this process decides alone", exc_info=True)


def _redis() -> Any:
    """The Redis client behind the Django cache; None without Redis."""
    get_client = getattr(getattr(cache, "client", None), "get_client", None)
    return get_client(write=True) if get_client is not None else None
