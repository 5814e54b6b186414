"""Celery entry points for model calls that are not interactive: async jobs and warming.
They take ids, never secrets."""

import threading

from celery import shared_task

from beastmode.lib import dispatch
from beastmode.lib.chat_request import ChatRequest
from beastmode.lib.errors import GatewayError
from gateway import jobs, warming
from gateway.models import WarmupPrompt


def store_job(
    *,
    service_key_id: int,
    request_id: str,
    chat: ChatRequest,
    cache_control: str | None,
    abandoned: threading.Event,
) -> str:
    """Store an async job; returns its id. One stored after its caller gave up waiting
    (`abandoned`: the caller answered 503) is deleted again."""
    job_id = jobs.submit(
        service_key_id=service_key_id,
        request_id=request_id,
        chat=chat,
        cache_control=cache_control,
    )
    if abandoned.is_set():
        jobs.forget(job_id)
        raise GatewayError("database_unavailable", "The database answered too late.")
    return job_id


def send_job(job_id: str, abandoned: threading.Event) -> None:
    """Send a stored job to the workers; only its id travels, never the content or a secret.
    A job that cannot be sent (the queue is away: GatewayError), or is sent after its caller
    gave up waiting, is deleted (a message for it finds no job and does nothing)."""
    try:
        dispatch.enqueue(run_job, job_id)
    except Exception as exc:
        jobs.forget(job_id)
        raise GatewayError(
            "queue_unavailable", f"The job could not be queued ({type(exc).__name__})."
        ) from None
    if abandoned.is_set():
        jobs.forget(job_id)


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
