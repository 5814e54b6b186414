"""Celery entry points of the cache. They take ids, never secrets."""

import time

from celery import shared_task
from django.utils import timezone

from cache import retention
from cache.models import CacheEntry
from cache.semantic import backfill


@shared_task(expires=3600)
def prune_expired() -> int:
    """Delete expired L3 rows; returns how many."""
    deleted, _ = CacheEntry.objects.filter(expires_at__lte=timezone.now()).delete()
    return deleted


@shared_task(expires=3600)
def prune_logs() -> dict[str, int]:
    """Delete old semantic pairs and purge records (cache/retention.py); returns how many."""
    now = timezone.now()
    return {
        "semantic_pairs": retention.prune_semantic_pairs(now),
        "purges": retention.prune_purges(now),
    }


@shared_task(expires=3600)
def embed_stored_answers(model: str) -> dict[str, int]:
    """Make a model's stored answers matchable after its semantic matching was switched on
    (cache/semantic/backfill.py); returns how many were embedded and how many left without."""
    # First let every process plan with the new mode, and the answers planned before it
    # (stored without a vector) reach L3: the pass below then finds those too.
    time.sleep(backfill.settle_s())
    result = backfill.embed_unembedded(model)
    return {"embedded": result.embedded, "left_unembedded": result.left_unembedded}
