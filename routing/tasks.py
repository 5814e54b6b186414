"""Celery entry points of routing: endpoint health probes."""

from celery import shared_task

from routing import health


@shared_task(expires=60)
def probe_endpoints() -> dict[str, bool]:
    return health.probe_all()
