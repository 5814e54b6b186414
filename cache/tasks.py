"""Celery entry points of the cache. They take ids, never secrets."""

from celery import shared_task
from django.utils import timezone

from cache import retention, warming
from cache.models import CacheEntry, WarmupPrompt
from routing import dispatch


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


@shared_task(expires=600)
def warm_prompt(prompt_id: int) -> str:
    return warming.warm_prompt(prompt_id)


@shared_task(expires=600)
def warm_all_prompts() -> int:
    """Fan out one task per enabled warm-up prompt."""
    ids = list(WarmupPrompt.objects.filter(enabled=True).values_list("id", flat=True))
    for prompt_id in ids:
        dispatch.enqueue(warm_prompt, prompt_id)
    return len(ids)


@shared_task(expires=600)
def refresh_expiring() -> dict[str, str]:
    return warming.refresh_expiring()
