"""Asynchronous chat completions: queued by the API, run by a Celery worker via the cache and
the router, as a request to the API is (gateway/answer.py)."""

import secrets
from dataclasses import replace
from typing import Any

from django.utils import timezone

from beastmode.lib.chat_request import ChatRequest, check_chat_body
from beastmode.lib.errors import GatewayError
from gateway import answer
from gateway.exchange import Exchange
from monitoring import recorder
from routing import registry
from routing.models import AsyncJob


def submit(
    *, service_key_id: int, request_id: str, chat: ChatRequest, cache_control: str | None
) -> str:
    """Store the job; returns its id (gateway.tasks.submit_job hands it to a worker)."""
    job = AsyncJob.objects.create(
        id="job_" + secrets.token_hex(12),
        service_key_id=service_key_id,
        request_id=request_id,
        body=chat.body,
        cache_controls={"field": chat.cache_field, "header": cache_control},
    )
    return job.id


def view_for(*, job_id: str, service_key_id: int) -> dict[str, Any]:
    """What GET /v1/jobs/<id> shows; only the key that submitted the job may see it."""
    job = AsyncJob.objects.filter(pk=job_id, service_key_id=service_key_id).first()
    if job is None:
        raise GatewayError("job_not_found", f"No job '{job_id}' for this service key.")
    view: dict[str, Any] = {
        "id": job.id,
        "object": "beastmode.job",
        "status": job.status,
        "created_at": int(job.created_at.timestamp()),
    }
    if job.status == AsyncJob.Status.SUCCEEDED:
        view["result"] = job.result
    elif job.status == AsyncJob.Status.FAILED:
        view["status_code"] = job.status_code
        view["error"] = (job.result or {}).get("error")
    return view


def run(job_id: str) -> str:
    """Run a queued job to completion; safe to call twice (a redelivered task does nothing)."""
    claimed = AsyncJob.objects.filter(pk=job_id, status=AsyncJob.Status.QUEUED).update(
        status=AsyncJob.Status.RUNNING
    )
    job = AsyncJob.objects.filter(pk=job_id).first() if claimed else None
    if job is None:
        return "skipped"
    snapshot = registry.reload()
    exchange = Exchange(
        request_id=job.request_id, method="JOB", path=f"/v1/jobs/{job.id}", is_async_job=True
    )
    exchange.model = job.body.get("model", "")
    try:
        key = snapshot.key_by_id(job.service_key_id)
        if key is None:
            raise GatewayError(
                "revoked_api_key",
                "The service key that submitted this job was revoked, expired or deleted.",
            )
        exchange.key = key
        chat = replace(check_chat_body(job.body), cache_field=job.cache_controls.get("field"))
        question = answer.Question(
            key=key,
            route=snapshot.resolve(key, exchange.model),
            chat=chat,
            cache_control=job.cache_controls.get("header"),
            store_durably=True,  # a worker's process may end soon
        )
        reply = answer.answer_blocking(exchange, question)
    except GatewayError as error:
        _finish(job, AsyncJob.Status.FAILED, error.status, error.to_body())
        exchange.finish(status=error.status, error=error)
    else:
        _finish(job, AsyncJob.Status.SUCCEEDED, 200, reply.completion or {})
    recorder.flush_or_leave_to_writer()
    return job.status


def _finish(job: AsyncJob, status: str, status_code: int, result: dict[str, Any]) -> None:
    job.status, job.status_code, job.result = status, status_code, result
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "status_code", "result", "finished_at"])
