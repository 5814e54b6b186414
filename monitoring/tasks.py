"""Celery entry points of monitoring."""

from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from monitoring.models import DashboardRollup, RequestRecord, Rollup


@shared_task(expires=3600)
def prune_records() -> dict[str, int]:
    """Retention: raw records after RECORD_RETENTION_DAYS, minute rollups after 2 days,
    hour (and the dashboard's day) rollups after ROLLUP_RETENTION_DAYS. Returns how many
    rows went."""
    now = timezone.now()
    records, _ = RequestRecord.objects.filter(
        created_at__lt=now - timedelta(days=settings.RECORD_RETENTION_DAYS)
    ).delete()
    minutes, _ = Rollup.objects.filter(
        bucket_s=60, bucket_start__lt=now - timedelta(days=2)
    ).delete()
    hours, _ = Rollup.objects.filter(
        bucket_s=3600, bucket_start__lt=now - timedelta(days=settings.ROLLUP_RETENTION_DAYS)
    ).delete()
    dashboard_minutes, _ = DashboardRollup.objects.filter(
        bucket_s=60, bucket_start__lt=now - timedelta(days=2)
    ).delete()
    dashboard_longer, _ = DashboardRollup.objects.filter(
        bucket_s__gt=60,
        bucket_start__lt=now - timedelta(days=settings.ROLLUP_RETENTION_DAYS + 1),
    ).delete()
    return {
        "records": records,
        "minute_rollups": minutes,
        "hour_rollups": hours,
        "dashboard_rollups": dashboard_minutes + dashboard_longer,
    }
