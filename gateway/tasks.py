"""Celery entry points for model calls that are not interactive: async jobs and warming.
They take ids, never secrets."""

import threading

from celery import shared_task

from beastmode.lib import dispatch
from beastmode.lib.chat_request import ChatRequest
from beastmode.lib.errors import GatewayError
from gateway import jobs, warming
from gateway.models import WarmupPrompt


def submit_job(
    *,
    service_key_id: int,
    request_id: str,
    chat: ChatRequest,
    cache_control: str | None,
    abandoned: threading.Event | None = None,
) -> str:
    """Store an async job and send it to the workers; returns its id. A job that cannot
    be sent is deleted (GatewayError: the queue is away), and so is one whose caller gave
    up waiting while it was stored (`abandoned`: the caller answered 503). Only the id
    travels, never the content or a secret."""
    job_id = jobs.submit(
        service_key_id=service_key_id,
        request_id=request_id,
        chat=chat,
        cache_control=cache_control,
    )
    if abandoned is not None and abandoned.is_set():
        jobs.forget(job_id)
        raise GatewayError("database_unavailable", "The database answered too late.")
    try:
        dispatch.enqueue(run_job, job_id)
    except Exception as exc:
        jobs.forget(job_id)
        raise GatewayError(
            "queue_unavailable", f"The job could not be queued ({type(exc).__name__})."
        ) from None
    return job_id


@shared_task(acks_late=True, max_retries=0)
def run_job(job_id: str) -> str:
    return jobs.run(job_id)


@shared_task(expires=60)
def reap_jobs() -> dict[str, int]:
    return jobs.reap()


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
