"""Asynchronous jobs: 202 now, the result later from a Celery worker (in-process when embedded)."""

import pytest
from django.utils import timezone

from cache.models import CacheEntry
from monitoring.models import RequestRecord
from routing.models import AsyncJob, KeySpend
from tests.personas import Client, ModelFactory, make_client, record_for, wait_for_key
from tests.processes import (
    Process,
    http,
    upstream_hits,
    wait_until,
)

pytestmark = pytest.mark.embedded


def submit(
    gateway: Process, client: Client, model: str, headers: dict[str, str] | None = None
) -> tuple[str, str]:
    body = {"model": model, "messages": [{"role": "user", "content": "later"}]}
    reply = http(f"{gateway.url}/v1/chat/completions", method="POST", key=client.key,
                 headers={"X-BeastMode-Async": "true", **(headers or {})}, body=body)  # fmt: skip
    assert reply.status == 202, reply.body
    job = reply.json()
    assert job["status"] == "queued" and job["id"].startswith("job_")
    return job["id"], reply.headers["x-request-id"]


def wait_for_job(gateway: Process, client: Client, job_id: str, status: str) -> dict:
    def view() -> dict | None:
        job = http(f"{gateway.url}/v1/jobs/{job_id}", key=client.key).json()
        return job if job["status"] == status else None

    return wait_until(view, timeout_s=15)


def test_async_job_is_accepted_then_answered_by_a_worker(
    gateway: Process, alice: Client, model_with: ModelFactory, celery_worker: None
) -> None:
    model = model_with("")
    job_id, request_id = submit(gateway, alice, model)

    view = wait_for_job(gateway, alice, job_id, "succeeded")
    answer = view["result"]["choices"][0]["message"]["content"]
    assert answer == f"Echo from {model}-ep0-model: later"
    accepted = wait_until(
        lambda: RequestRecord.objects.filter(request_id=request_id, outcome="accepted").first()
    )
    assert accepted.status_code == 202
    run = wait_until(
        lambda: RequestRecord.objects.filter(request_id=request_id, outcome="success").first()
    )
    assert run.is_async_job and run.endpoint == f"{model}-ep0" and run.tokens_out == 4


def test_a_failed_job_reports_the_same_diagnosis(
    gateway: Process, alice: Client, model_with: ModelFactory, celery_worker: None
) -> None:
    model = model_with("status/401")
    job_id, _ = submit(gateway, alice, model)

    view = wait_for_job(gateway, alice, job_id, "failed")
    assert view["status_code"] == 502
    assert view["error"]["code"] == "upstream_auth" and view["error"]["tips"]


def test_a_job_is_visible_only_to_the_key_that_submitted_it(
    gateway: Process, alice: Client, bob: Client, model_with: ModelFactory, celery_worker: None
) -> None:
    model = model_with("")
    job_id, _ = submit(gateway, alice, model)

    reply = http(f"{gateway.url}/v1/jobs/{job_id}", key=bob.key)
    assert reply.status == 404 and reply.json()["error"]["code"] == "job_not_found"


def run_record(request_id: str) -> RequestRecord:
    return wait_until(
        lambda: (
            RequestRecord.objects.filter(request_id=request_id, is_async_job=True)
            .exclude(outcome="accepted")
            .first()
        )
    )


def test_a_repeated_job_is_answered_from_the_cache_and_its_answer_serves_the_api_too(
    gateway: Process,
    fake_upstream: Process,
    alice: Client,
    model_with: ModelFactory,
    celery_worker: None,
) -> None:
    model = model_with("delay/0")
    path = "/delay/0/v1/chat/completions"
    before = upstream_hits(fake_upstream, path)
    first, first_request = submit(gateway, alice, model)
    answer = wait_for_job(gateway, alice, first, "succeeded")["result"]

    again, again_request = submit(gateway, alice, model)

    assert wait_for_job(gateway, alice, again, "succeeded")["result"] == answer
    assert upstream_hits(fake_upstream, path) - before == 1
    assert run_record(first_request).cache_outcome == "miss"
    hit = run_record(again_request)
    assert (hit.cache_outcome, hit.endpoint, hit.tokens_out) == ("exact", "", 0)
    assert hit.saved_tokens_out == 4
    body = {"model": model, "messages": [{"role": "user", "content": "later"}]}
    reply = http(f"{gateway.url}/v1/chat/completions", method="POST", key=alice.key, body=body)
    assert reply.headers["x-beastmode-cache"] == "exact"
    assert reply.json()["choices"] == answer["choices"]


def test_a_job_sent_with_no_store_leaves_nothing_in_the_cache(
    gateway: Process, alice: Client, model_with: ModelFactory, celery_worker: None
) -> None:
    model = model_with("")
    job_id, request_id = submit(gateway, alice, model, {"Cache-Control": "no-store"})

    wait_for_job(gateway, alice, job_id, "succeeded")

    assert run_record(request_id).cache_outcome == "miss"
    assert not CacheEntry.objects.filter(model=model).exists()


def test_an_async_job_with_bad_cache_controls_is_refused_at_once_with_a_record(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("")
    body = {"model": model, "messages": [{"role": "user", "content": "later"}],
            "cache": {"ttl": "forever"}}  # fmt: skip
    reply = http(f"{gateway.url}/v1/chat/completions", method="POST", key=alice.key,
                 headers={"X-BeastMode-Async": "true"}, body=body)  # fmt: skip
    assert reply.status == 400 and reply.json()["error"]["param"] == "cache"
    assert not AsyncJob.objects.filter(service_key_id=alice.key_id).exists()
    assert record_for(reply.headers["x-request-id"]).status_code == 400


def test_a_job_of_a_key_over_its_budget_is_refused_when_submitted(
    gateway: Process, model_with: ModelFactory
) -> None:
    model = model_with("")
    client = wait_for_key(gateway, make_client("spent", budget_usd="0.01", budget_period="total"))
    today = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    # (Replacing any row there: a gateway of an earlier test may have written one late,
    # under a key id that SQLite hands out again after the flush.)
    KeySpend.objects.update_or_create(
        service_key_id=client.key_id, bucket_s=86400, bucket_start=today,
        defaults={"cost_usd": 0.01},
    )  # fmt: skip
    body = {"model": model, "messages": [{"role": "user", "content": "later"}]}
    # The first request that would call upstream reads the spend (a database read, which a
    # busy machine may not answer in time: then the request is not held back); refused then.
    wait_until(lambda: http(f"{gateway.url}/v1/chat/completions", method="POST",
                            key=client.key, body=body).status == 429)  # fmt: skip

    reply = http(f"{gateway.url}/v1/chat/completions", method="POST", key=client.key,
                 headers={"X-BeastMode-Async": "true"}, body=body)  # fmt: skip
    assert reply.status == 429, reply.body
    error = reply.json()["error"]
    assert error["code"] == "insufficient_quota" and "total budget" in error["message"]
    assert not AsyncJob.objects.filter(service_key_id=client.key_id).exists()
