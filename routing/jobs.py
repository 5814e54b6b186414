"""Asynchronous chat completions: queued by the API, run by a Celery worker via the cache and
the router, as a request to the API would be (without coalescing)."""

import asyncio
import secrets
from dataclasses import replace
from typing import Any

from django.db import transaction
from django.utils import timezone

from cache import service as cache_service
from monitoring import recorder
from routing import dispatch, registry, router, upstream
from routing.errors import GatewayError
from routing.exchange import CacheOutcome, Exchange
from routing.models import AsyncJob
from routing.validation import ChatRequest, check_chat_body


def submit(
    *, service_key_id: int, request_id: str, chat: ChatRequest, cache_control: str | None
) -> str:
    """Store the job and hand its id (never its content or any secret) to a worker."""
    from routing import tasks

    job = AsyncJob.objects.create(
        id="job_" + secrets.token_hex(12),
        service_key_id=service_key_id,
        request_id=request_id,
        body=chat.body,
        cache_controls={"field": chat.cache_field, "header": cache_control},
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
        plan = _cache_plan(job, key, route)
        completion = asyncio.run(_complete(exchange, route, job.body, plan))
        if plan is not None and not _answered_from_cache(exchange):
            _store(exchange, plan, completion)
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
        if not _answered_from_cache(exchange):
            exchange.add_usage(completion.get("usage"))
        _finish(job, AsyncJob.Status.SUCCEEDED, 200, completion)
        exchange.finish(status=200)
    recorder.flush_or_leave_to_writer()
    return job.status


async def _complete(
    exchange: Exchange,
    route: registry.RouteConfig,
    body: dict[str, Any],
    plan: cache_service.CachePlan | None,
) -> dict[str, Any]:
    """The answer from the cache, as for a request to the API, else from upstream."""
    try:
        if plan is not None:
            if plan.read and (hit := await cache_service.lookup(plan)):
                exchange.cache = CacheOutcome.of_hit(hit, route)
                return hit.entry.response
            exchange.cache = CacheOutcome.of_miss(plan.shadow)
        return await router.complete(exchange.model, route, body, exchange.trace)
    finally:
        await upstream.close_connections()


def _cache_plan(
    job: AsyncJob, key: registry.KeyConfig, route: registry.RouteConfig
) -> cache_service.CachePlan | None:
    """The job's use of the cache, with the controls its request came with."""
    chat = replace(check_chat_body(job.body), cache_field=job.cache_controls.get("field"))
    header = job.cache_controls.get("header")
    return cache_service.plan(key, route, chat, header, job.request_id)


def _answered_from_cache(exchange: Exchange) -> bool:
    return exchange.cache is not None and exchange.cache.outcome in ("exact", "semantic")


def _store(exchange: Exchange, plan: cache_service.CachePlan, completion: dict[str, Any]) -> None:
    """Store the answer for every tier (written now: a worker's process may end soon)."""
    if exchange.trace.endpoint is None or exchange.cache is None:
        return
    entry = cache_service.store(plan, completion, exchange.trace.endpoint.name, wait=True)
    if entry is not None:
        exchange.cache.entry_key = entry.key


def _finish(job: AsyncJob, status: str, status_code: int, result: dict[str, Any]) -> None:
    job.status, job.status_code, job.result = status, status_code, result
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "status_code", "result", "finished_at"])
