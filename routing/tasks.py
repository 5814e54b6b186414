"""Celery entry points for model calls that are not interactive. They take ids, not secrets."""

from celery import shared_task

from routing import health, jobs


@shared_task(acks_late=True, max_retries=0)
def run_job(job_id: str) -> str:
    return jobs.run(job_id)


@shared_task(expires=60)
def probe_endpoints() -> dict[str, bool]:
    return health.probe_all()
