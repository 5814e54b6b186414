"""The Celery app and the one periodic schedule. Run: celery -A beastmode worker -B"""

import os

from celery import Celery
from django.conf import settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "beastmode.settings")

app = Celery("beastmode")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

app.conf.beat_schedule = {
    "probe-endpoints": {"task": "routing.tasks.probe_endpoints", "schedule": 60.0},
    "prune-cache": {"task": "cache.tasks.prune_expired", "schedule": 3600.0},
    "prune-cache-logs": {"task": "cache.tasks.prune_logs", "schedule": 3600.0},
    "prune-records": {"task": "monitoring.tasks.prune_records", "schedule": 3600.0},
    "refresh-expiring-answers": {"task": "gateway.tasks.refresh_expiring", "schedule": 300.0},
    "warm-prompts": {
        "task": "gateway.tasks.warm_all_prompts",
        "schedule": float(settings.CACHE_WARMUP_INTERVAL_S),
    },
}
