"""Asynchronous chat completions: queued by the API, run by a Celery worker via the router."""

import asyncio
import secrets
from typing import Any

from django.db import transaction
from django.utils import timezone

from monitoring import recorder
from routing import dispatch, registry, router, upstream
from routing.errors import GatewayError
from routing.exchange import Exchange
from routing.models import AsyncJob


def submit(*, service_key_id: int, request_id: str, body: dict[str, Any]) -> str:
    """Store the job and hand its id (never its content or any secret) to a worker."""
    from routing import tasks

    job = AsyncJob.objects.create(
        id="job_" + secrets.token_hex(12),
        service_key_id=service_key_id,
        request_id=request_id,
        body=body,
    )
    transaction.on_commit(lambda: dispatch.enqueue(tasks.run_job, job.id))
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
            raise StopIteration
        exchange.key = key
        route = snapshot.resolve(key, exchange.model)
        completion = asyncio.run(_complete(exchange, route, job.body))
    except (GatewayError, StopIteration) as exc:
        error = (
            exc
            if isinstance(exc, GatewayError)
            else GatewayError(
                "revoked_api_key",
                "The service key that submitted this job was revoked, expired or deleted.",
            )
        )
        _finish(job, AsyncJob.Status.FAILED, error.status, error.to_body())
        exchange.finish(status=error.status, error=error)
    else:
        exchange.add_usage(completion.get("usage"))
        _finish(job, AsyncJob.Status.SUCCEEDED, 200, completion)
        exchange.finish(status=200)
    recorder.flush_or_leave_to_writer()
    return job.status


async def _complete(
    exchange: Exchange, route: registry.RouteConfig, body: dict[str, Any]
) -> dict[str, Any]:
    try:
        return await router.complete(exchange.model, route, body, exchange.trace)
    finally:
        await upstream.close_connections()


def _finish(job: AsyncJob, status: str, status_code: int, result: dict[str, Any]) -> None:
    job.status, job.status_code, job.result = status, status_code, result
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "status_code", "result", "finished_at"])
