"""The Celery app and the one periodic schedule. Run: celery -A beastmode worker -B"""

import logging
import os
from typing import Any

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger

from beastmode import kombu_fix
from beastmode.lib import redaction

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "beastmode.settings")

app = Celery("beastmode")
kombu_fix.keep_workers_through_redis_outages()
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def _schedule(sender: Celery, **kwargs: Any) -> None:
    # Set once the app has read Django's settings, not at import: importing beastmode (and
    # so beastmode.lib) must not need settings.
    from django.conf import settings

    if settings.REDIS_URL:
        # Every `celery worker -B` embeds a beat: RedBeat's lock in Redis lets one of them
        # send the periodic tasks, in a cluster of any size; its lock lasts 5 x the max
        # interval, so a beat killed while holding it is replaced that soon. A Redis outage
        # or restart does not end the beat (beastmode/beat.py).
        sender.conf.update(
            beat_scheduler="beastmode.beat:ResilientRedBeatScheduler",
            beat_max_loop_interval=settings.BEAT_MAX_INTERVAL_S,
            redbeat_redis_url=settings.REDIS_URL,
            redbeat_redis_options={"socket_connect_timeout": 2.0},
        )
    sender.conf.beat_schedule = {
        "probe-endpoints": {
            "task": "routing.tasks.probe_endpoints",
            "schedule": float(settings.ENDPOINT_PROBE_INTERVAL_S),
        },
        "prune-cache": {"task": "cache.tasks.prune_expired", "schedule": 3600.0},
        "prune-cache-logs": {"task": "cache.tasks.prune_logs", "schedule": 3600.0},
        "prune-records": {"task": "monitoring.tasks.prune_records", "schedule": 3600.0},
        "refresh-expiring-answers": {"task": "gateway.tasks.refresh_expiring", "schedule": 300.0},
        "reap-jobs": {
            "task": "gateway.tasks.reap_jobs",
            "schedule": float(settings.JOB_REAP_INTERVAL_S),
        },
        "warm-prompts": {
            "task": "gateway.tasks.warm_all_prompts",
            "schedule": float(settings.CACHE_WARMUP_INTERVAL_S),
        },
    }


@after_setup_logger.connect
@after_setup_task_logger.connect
def _redact_worker_logs(logger: logging.Logger, **kwargs: Any) -> None:
    # A worker replaces the root handlers settings.LOGGING made with its own: the filter
    # that redacts upstream keys goes on those too.
    redaction.install_on(logger)
