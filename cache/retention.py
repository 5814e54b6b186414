"""How long the cache's logs are kept: semantic pairs and purge records.

Both grow with use and were never pruned. Semantic pairs go after
CACHE_SEMANTIC_PAIR_RETENTION_DAYS, except those an admin marked false (the evaluation
set, and the block list cache/semantic/false_pairs.py matches against). A purge record goes once
no entry it covers can be alive in any tier (`purge_log.retention_s()`).
"""

from datetime import datetime, timedelta

from django.conf import settings

from cache import purge_log
from cache.models import CachePurge, SemanticPair


def prune_semantic_pairs(now: datetime) -> int:
    """Delete the unmarked pairs older than the retention; returns how many."""
    cutoff = now - timedelta(days=settings.CACHE_SEMANTIC_PAIR_RETENTION_DAYS)
    deleted, _ = SemanticPair.objects.filter(created_at__lt=cutoff, marked_false=False).delete()
    return deleted


def prune_purges(now: datetime) -> int:
    """Delete the purge records that can no longer cover a live entry; returns how many."""
    cutoff = now - timedelta(seconds=purge_log.retention_s())
    deleted, _ = CachePurge.objects.filter(created_at__lt=cutoff).delete()
    return deleted
