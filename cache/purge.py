"""Purging cached answers from every tier of every process."""

import threading

from django.db.models import Max

from cache import service
from cache.models import CacheEntry, CachePurge
from routing import registry

_seen = {"purge_id": -1}
_lock = threading.Lock()


def purge(*, model: str = "", namespace: str = "", key: str = "") -> int:
    """Delete matching entries from L3 and L2 now; every process drops them from L1 within
    a second. Returns how many stored entries were deleted."""
    if not (model or namespace or key):
        raise ValueError("say what to purge: a model, a namespace or a key")
    rows = CacheEntry.objects.all()
    if model:
        rows = rows.filter(model=model)
    if namespace:
        rows = rows.filter(namespace=namespace)
    if key:
        rows = rows.filter(key=key)
    keys = list(rows.values_list("key", flat=True))
    deleted, _ = rows.delete()
    for doomed in keys:
        service.tiers().l2.delete(doomed)
    CachePurge.objects.create(model=model, namespace=namespace, key=key)
    registry.bump_version()
    apply_new_purges()
    return deleted


def apply_new_purges() -> None:
    """Apply purges this process has not applied yet (called on every registry reload)."""
    with _lock:
        if _seen["purge_id"] < 0:  # a fresh process has nothing stale in L1
            _seen["purge_id"] = CachePurge.objects.aggregate(last=Max("id"))["last"] or 0
            return
        for row in CachePurge.objects.filter(id__gt=_seen["purge_id"]).order_by("id"):
            service.tiers().l1.purge(model=row.model, namespace=row.namespace, key=row.key)
            _seen["purge_id"] = row.id
