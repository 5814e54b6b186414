"""Asynchronous chat completions: queued by the API, run by a Celery worker via the cache and
the router, as a request to the API is (gateway/answer.py).

Every job ends. A run claims its job with a lease that a heartbeat thread renews; a worker
that dies stops renewing it, and once it has run out the reaper (`reap`, every
JOB_REAP_INTERVAL_S on the beat) sends the job again: the next run takes it over as the
next attempt, and only the latest attempt may finish it. After JOB_MAX_ATTEMPTS runs the
reaper fails it (`job_abandoned`). A job whose message was lost (a Redis restart) is sent
again once it has been queued JOB_RESEND_AFTER_S. So a job whose worker died mid-call may
call upstream again (its answer was lost with the worker, unless the cache kept it).
"""

import contextlib
import logging
import re
import secrets
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections, transaction
from django.db.models import Q
from django.utils import timezone

from beastmode.lib import dispatch
from beastmode.lib.chat_request import ChatRequest, check_chat_body
from beastmode.lib.errors import GatewayError
from gateway import answer
from gateway.exchange import Exchange
from monitoring import recorder
from routing import registry
from routing.models import AsyncJob

log = logging.getLogger(__name__)
QUEUED, RUNNING = AsyncJob.Status.QUEUED, AsyncJob.Status.RUNNING


def submit(
    *, service_key_id: int, request_id: str, chat: ChatRequest, cache_control: str | None
) -> str:
    """Store the job; returns its id (gateway.tasks.send_job hands it to a worker)."""
    job = AsyncJob.objects.create(
        id="job_" + secrets.token_hex(12),
        service_key_id=service_key_id,
        request_id=request_id,
        body=chat.body,
        cache_controls={"field": chat.cache_field, "header": cache_control},
        enqueued_at=timezone.now(),
    )
    return job.id


def forget(job_id: str) -> None:
    """Delete a job that could not be queued (if the database refuses too, the reaper
    sends it later: it stays `queued`)."""
    with contextlib.suppress(Exception):
        AsyncJob.objects.filter(pk=job_id, status=QUEUED).delete()


_JOB_ID = re.compile(r"job_[0-9a-f]{24}")


def is_job_id(text: str) -> bool:
    """Shaped like the ids `submit` makes (anything else names no job: no query needed,
    and text Postgres cannot hold, like NUL, never reaches it)."""
    return _JOB_ID.fullmatch(text) is not None


def job_not_found(job_id: str) -> GatewayError:
    return GatewayError("job_not_found", f"No job '{job_id[:100]}' for this service key.")


def view_for(*, job_id: str, service_key_id: int) -> dict[str, Any]:
    """What GET /v1/jobs/<id> shows; only the key that submitted the job may see it."""
    job = AsyncJob.objects.filter(pk=job_id, service_key_id=service_key_id).first()
    if job is None:
        raise job_not_found(job_id)
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
    """Run a job to completion unless another run holds it; returns its status then, or
    "skipped". Safe to call any number of times (a redelivered task)."""
    attempt = _claim(job_id)
    if attempt is None:
        return "skipped"
    job = AsyncJob.objects.get(pk=job_id)
    snapshot = registry.reload()
    exchange = Exchange(
        request_id=job.request_id, method="JOB", path=f"/v1/jobs/{job.id}", is_async_job=True
    )
    exchange.model = job.body.get("model", "")
    with _heartbeat(job_id, attempt):
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
            ended = _finish(job_id, attempt, AsyncJob.Status.FAILED, error.status, error.to_body())
            exchange.finish(status=error.status, error=error)
        else:
            ended = _finish(job_id, attempt, AsyncJob.Status.SUCCEEDED, 200, reply.completion or {})
    recorder.flush_or_leave_to_writer()
    return ended


def reap() -> dict[str, int]:
    """Send again the jobs whose run died (lease out) or whose message was lost (queued
    too long); fail those that ran out of attempts. What it did, by kind."""
    now = timezone.now()
    lease_out = Q(status=RUNNING, lease_until__lt=now)
    given_up = AsyncJob.objects.filter(lease_out, attempts__gte=settings.JOB_MAX_ATTEMPTS)
    error = GatewayError(
        "job_abandoned",
        f"This job's run stopped before it ended {settings.JOB_MAX_ATTEMPTS} times.",
    )
    abandoned = given_up.update(
        status=AsyncJob.Status.FAILED, status_code=error.status, result=error.to_body(),
        finished_at=now, lease_until=None,
    )  # fmt: skip
    resend_before = now - timedelta(seconds=settings.JOB_RESEND_AFTER_S)
    stale = Q(status=QUEUED, enqueued_at__lt=resend_before) | lease_out
    ids = list(AsyncJob.objects.filter(stale).values_list("id", flat=True)[:1000])
    AsyncJob.objects.filter(pk__in=ids).update(enqueued_at=now)
    from gateway import tasks  # (tasks imports this module)

    for job_id in ids:
        dispatch.enqueue(tasks.run_job, job_id)
    if abandoned or ids:
        log.warning("jobs reaped: %s sent again, %s abandoned", len(ids), abandoned)
    return {"sent_again": len(ids), "abandoned": abandoned}


def _claim(job_id: str) -> int | None:
    """Take the job for a run: its attempt number, or None while another run holds it (or
    it ended, or ran out of attempts)."""
    now = timezone.now()
    claimable = Q(status=QUEUED) | Q(status=RUNNING, lease_until__lt=now)
    with transaction.atomic():
        job = (
            AsyncJob.objects.select_for_update(skip_locked=True)
            .filter(claimable, pk=job_id, attempts__lt=settings.JOB_MAX_ATTEMPTS)
            .first()
        )
        if job is None:
            return None
        job.status, job.attempts = RUNNING, job.attempts + 1
        job.lease_until = now + timedelta(seconds=settings.JOB_LEASE_S)
        job.save(update_fields=["status", "attempts", "lease_until"])
        return job.attempts


@contextlib.contextmanager
def _heartbeat(job_id: str, attempt: int) -> Iterator[None]:
    """Renew the run's lease every third of it, in a thread, while the block runs."""
    stop = threading.Event()

    def renew() -> None:
        try:
            while not stop.wait(settings.JOB_LEASE_S / 3):
                until = timezone.now() + timedelta(seconds=settings.JOB_LEASE_S)
                with contextlib.suppress(Exception):  # the database may be away a while
                    _current_run(job_id, attempt).update(lease_until=until)
        finally:
            close_old_connections()

    thread = threading.Thread(target=renew, name=f"lease-{job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _finish(job_id: str, attempt: int, status: str, status_code: int, result: dict[str, Any]
            ) -> str:  # fmt: skip
    """End the job with this run's outcome, unless a later run took it over."""
    ended = _current_run(job_id, attempt).update(
        status=status, status_code=status_code, result=result, finished_at=timezone.now(),
        lease_until=None,
    )  # fmt: skip
    if not ended:
        log.warning("job %s: attempt %s was taken over; its outcome is dropped", job_id, attempt)
        return "superseded"
    return status


def _current_run(job_id: str, attempt: int) -> Any:
    return AsyncJob.objects.filter(pk=job_id, status=RUNNING, attempts=attempt)
