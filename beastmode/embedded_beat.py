"""The periodic schedule of beastmode/celery.py, run in-process when there is no broker.

In production `celery -A beastmode worker -B` runs it; in the embedded default this
thread does, so probes, pruning and warming work there too.
"""

import logging
import threading
import time

from beastmode.celery import app
from beastmode.lib import dispatch

log = logging.getLogger(__name__)
_started = threading.Event()


def start() -> None:
    if _started.is_set():
        return
    _started.set()
    threading.Thread(target=_run_forever, name="embedded-beat", daemon=True).start()


def _run_forever() -> None:
    # A worker imports every app's tasks module at start; a web process does not, and a
    # scheduled task whose module nothing else imported (routing.tasks) was not registered:
    # the endpoint probes never ran and every minute logged NotRegistered.
    app.loader.import_default_modules()
    schedule = {
        entry["task"]: float(entry["schedule"]) for entry in app.conf.beat_schedule.values()
    }
    next_run = {name: time.monotonic() + interval for name, interval in schedule.items()}
    while True:
        time.sleep(1)
        for name, due in next_run.items():
            if time.monotonic() >= due:
                next_run[name] = time.monotonic() + schedule[name]
                try:
                    dispatch.enqueue(app.tasks[name])
                except Exception:
                    log.exception("periodic task %s failed to start", name)
