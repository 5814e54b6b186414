"""Celery entry points of the cache."""

from celery import shared_task
from django.utils import timezone

from cache.models import CacheEntry


@shared_task(expires=3600)
def prune_expired() -> int:
    """Delete expired L3 rows; returns how many."""
    deleted, _ = CacheEntry.objects.filter(expires_at__lte=timezone.now()).delete()
    return deleted
