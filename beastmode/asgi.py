"""ASGI entry point: /v1/* goes to the lean API app, everything else to Django."""

import os

from django.core.asgi import get_asgi_application

from beastmode.lib import runtime

runtime.limit_malloc_arenas()  # before Django, the database pool or our threads allocate
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "beastmode.settings")
django_application = get_asgi_application()  # before importing anything that uses models

import logging  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402

from beastmode import embedded_beat, shutdown  # noqa: E402
from beastmode.lib import redaction  # noqa: E402
from cache.semantic import index_sync  # noqa: E402
from gateway import api  # noqa: E402
from gateway.asgi_http import Receive, Scope, Send  # noqa: E402
from monitoring import metrics  # noqa: E402
from monitoring.websocket_urls import websocket_application  # noqa: E402
from routing import registry  # noqa: E402

log = logging.getLogger(__name__)


def _load_registry() -> None:
    try:
        registry.reload()
    except Exception as error:
        log.warning("registry not loaded at start (%s); retrying in background", error)
    finally:
        connection.close()  # (this thread's connection goes back to the pool)


# In a thread: uvicorn imports this module inside its running event loop, where the ORM
# refuses to run (each new worker answered 503 until its refresher had loaded it).
_loading = threading.Thread(target=_load_registry, name="registry-load")
_loading.start()
_loading.join()
registry.start_refresher()
index_sync.start(preload_embedder=registry.uses_semantic_matching)
metrics.start_publishing_gauges()
if settings.CELERY_TASK_ALWAYS_EAGER:
    embedded_beat.start()
# uvicorn's loggers keep the handlers it made before settings.LOGGING: redact there too.
for _name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
    redaction.install_on(logging.getLogger(_name))
runtime.speed_up_twisted_content_type()
runtime.skip_twisted_access_log()
runtime.freeze_startup_objects()
runtime.shorten_gil_switch_interval()
shutdown.take_over_sigterm()


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        shutdown.in_flight += 1
        try:
            if api.is_api_path(scope["path"]):
                await api.app(scope, receive, send)
            else:
                await django_application(scope, receive, send)
        finally:
            shutdown.in_flight -= 1
    elif scope["type"] == "websocket":
        await websocket_application(scope, receive, send)
    elif scope["type"] == "lifespan":
        await _lifespan(receive, send)


async def _lifespan(receive: Receive, send: Send) -> None:
    """uvicorn sends lifespan events, shutdown once it drained the requests in flight
    (daphne sends none: beastmode/shutdown.py takes its SIGTERM)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await shutdown.write_out(time.monotonic() + shutdown.WRITE_OUT_RESERVE_S - 1)
            await send({"type": "lifespan.shutdown.complete"})
            return
