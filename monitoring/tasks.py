"""Celery entry points of monitoring."""

from datetime import timedelta

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
    minutes, _ = DashboardRollup.objects.filter(
        bucket_s=60, bucket_start__lt=now - timedelta(days=2)
    ).delete()
    longer, _ = DashboardRollup.objects.filter(
        bucket_s__gt=60,
        bucket_start__lt=now - timedelta(days=settings.ROLLUP_RETENTION_DAYS + 1),
    ).delete()
    key_minutes, _ = KeySpend.objects.filter(
        bucket_s=60, bucket_start__lt=now - timedelta(days=2)
    ).delete()
    key_hours, _ = KeySpend.objects.filter(
        bucket_s=3600,
        bucket_start__lt=now - timedelta(days=settings.ROLLUP_RETENTION_DAYS + 1),
    ).delete()
    return {
        "records": records,
        "dashboard_rollups": minutes + longer,
        "key_spend_rollups": key_minutes + key_hours,
    }
