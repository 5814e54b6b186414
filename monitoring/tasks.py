"""Celery entry points of monitoring."""

from datetime import datetime, timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from monitoring.models import DashboardRollup, RequestRecord
from routing.models import KeySpend


@shared_task(expires=3600)
def prune_records() -> dict[str, int]:
    """Retention: raw records after RECORD_RETENTION_DAYS; the dashboard's and the keys'
    minute rollups after 2 days, their hour rollups (and the dashboard's day rollups)
    after ROLLUP_RETENTION_DAYS (+ 1). Keys' days stay: budgets sum them. Returns how many
    rows went."""
    now = timezone.now()
    records, _ = RequestRecord.objects.filter(
        created_at__lt=now - timedelta(days=settings.RECORD_RETENTION_DAYS)
    ).delete()
    minutes_until = now - timedelta(days=2)
    longer_until = now - timedelta(days=settings.ROLLUP_RETENTION_DAYS + 1)
    return {
        "records": records,
        "dashboard_rollups": _prune(
            DashboardRollup, minutes_until, longer_until, longer=(3600, 86400)
        ),
        "key_spend_rollups": _prune(KeySpend, minutes_until, longer_until, longer=(3600,)),
    }


def _prune(
    rollup: type[DashboardRollup] | type[KeySpend], minutes_until: datetime,
    longer_until: datetime, *, longer: tuple[int, ...],
) -> int:  # fmt: skip
    """Delete a rollup's minute rows before `minutes_until` and its `longer` rows before
    `longer_until`; how many went."""
    minutes, _ = rollup.objects.filter(bucket_s=60, bucket_start__lt=minutes_until).delete()
    hours, _ = rollup.objects.filter(bucket_s__in=longer, bucket_start__lt=longer_until).delete()
    return minutes + hours
