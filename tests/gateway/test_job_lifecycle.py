"""Every async job ends: leases and takeover, the reaper, a worker killed mid-job, and a
queue that is away when the job is submitted (gateway/jobs.py)."""

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from beastmode.lib.chat_request import check_chat_body
from devtools.servers import private_redis
from gateway import jobs
from routing.models import AsyncJob
from tests.gateway.test_jobs import submit, wait_for_job
from tests.personas import Client, ModelFactory, record_for, wait_for_key
from tests.processes import (
    ROOT,
    Process,
    free_port,
    http,
    server_env,
    start_gateway,
    stop_process,
    upstream_hits,
    wait_until,
)


def a_job(client: Client, model: str = "m") -> str:
    chat = check_chat_body({"model": model, "messages": [{"role": "user", "content": "later"}]})
    return jobs.submit(service_key_id=client.key_id, request_id="req_job", chat=chat,
                       cache_control=None)  # fmt: skip


@pytest.mark.embedded
def test_a_run_takes_over_a_job_only_once_the_lease_of_the_run_before_ran_out(
    alice: Client,
) -> None:
    job_id = a_job(alice)
    assert jobs._claim(job_id) == 1
    assert jobs._claim(job_id) is None, "the first run holds the lease"

    AsyncJob.objects.filter(pk=job_id).update(lease_until=timezone.now() - timedelta(seconds=1))

    assert jobs._claim(job_id) == 2
    assert jobs._finish(job_id, 1, AsyncJob.Status.SUCCEEDED, 200, {}) == "superseded"
    assert jobs._finish(job_id, 2, AsyncJob.Status.SUCCEEDED, 200, {"ok": 1}) == "succeeded"
    assert AsyncJob.objects.get(pk=job_id).result == {"ok": 1}


@pytest.mark.embedded
@pytest.mark.usefixtures("celery_worker")
def test_the_reaper_sends_lost_jobs_again_and_fails_those_out_of_attempts(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("")
    lost, dead = a_job(alice, model), a_job(alice, model)
    long_ago = timezone.now() - timedelta(hours=1)
    AsyncJob.objects.filter(pk=lost).update(enqueued_at=long_ago)  # its message was lost
    AsyncJob.objects.filter(pk=dead).update(
        status=AsyncJob.Status.RUNNING, attempts=settings.JOB_MAX_ATTEMPTS, lease_until=long_ago
    )

    assert jobs.reap() == {"sent_again": 1, "abandoned": 1}

    assert wait_for_job(gateway, alice, lost, "succeeded")["result"]["choices"]
    failed = wait_for_job(gateway, alice, dead, "failed")
    assert failed["status_code"] == 500 and failed["error"]["code"] == "job_abandoned"


# --- with a real broker ----------------------------------------------------------------

needs_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis")


@contextlib.contextmanager
def worker(
    env: dict[str, str], log_dir: Path, name: str, flags: tuple[str, ...] = ()
) -> Iterator[subprocess.Popen]:
    """`celery worker -B` (as the docs run it) reaping every half second, with 1 s leases."""
    env = {**env, "BEASTMODE_JOB_LEASE_S": "1", "BEASTMODE_JOB_REAP_INTERVAL_S": "0.5",
           "BEASTMODE_BEAT_MAX_INTERVAL_S": "0.5"}  # fmt: skip
    args = [sys.executable, "-m", "celery", "-A", "beastmode", "worker", "-B", "--concurrency",
            "1", "--loglevel", "INFO", "-n", f"{name}@%h", *flags,
            "--schedule", str(log_dir / f"{name}-schedule")]  # fmt: skip
    with (log_dir / f"{name}.log").open("wb") as log:
        popen = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)  # fmt: skip
    try:
        yield popen
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(timeout=10)


@pytest.fixture
def own_queue() -> Iterator[dict[str, str]]:
    """The environment of a node and workers on a Redis of their own (no other worker of
    the suite takes their jobs)."""
    with private_redis() as redis:
        yield {**server_env(), "REDIS_URL": redis.url}


@needs_redis
def test_a_job_whose_worker_is_killed_mid_call_ends_on_the_next_worker(
    own_queue: dict[str, str],
    fake_upstream: Process,
    alice: Client,
    model_with: ModelFactory,
    tmp_path: Path,
) -> None:
    model = model_with("delay/1500")
    path = "/delay/1500/v1/chat/completions"
    node = start_gateway("job-drill", own_queue)
    try:
        wait_for_key(node, alice)
        before = upstream_hits(fake_upstream, path)
        with worker(own_queue, tmp_path, "doomed") as doomed:
            job_id, _ = submit(node, alice, model)
            # Killed mid-call: the upstream has the request, the worker not yet its answer.
            wait_until(lambda: upstream_hits(fake_upstream, path) - before == 1, timeout_s=20)
            os.killpg(doomed.pid, signal.SIGKILL)  # the main process, its child and its beat

        with worker(own_queue, tmp_path, "next"):
            view = wait_for_job(node, alice, job_id, "succeeded")
    finally:
        stop_process(node)

    assert view["result"]["choices"][0]["message"]["content"].endswith("later")
    assert AsyncJob.objects.get(pk=job_id).attempts == 2
    # The killed run's call was lost with it: the job called upstream again.
    assert upstream_hits(fake_upstream, path) - before == 2


@needs_redis
def test_a_job_that_cannot_be_queued_is_refused_with_503_and_not_created(
    alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("")
    nothing_listens = f"redis://127.0.0.1:{free_port()}/0"
    node = start_gateway("queue-away", {**server_env(), "CELERY_BROKER_URL": nothing_listens})
    try:
        wait_for_key(node, alice)
        body = {"model": model, "messages": [{"role": "user", "content": "later"}]}
        reply = http(f"{node.url}/v1/chat/completions", method="POST", key=alice.key,
                     headers={"X-BeastMode-Async": "true"}, body=body)  # fmt: skip

        assert reply.status == 503 and reply.json()["error"]["code"] == "queue_unavailable"
        assert record_for(reply.headers["x-request-id"]).status_code == 503
        assert not AsyncJob.objects.filter(service_key_id=alice.key_id).exists()
    finally:
        stop_process(node)


def test_a_worker_and_its_beat_survive_a_redis_restart_and_end_the_jobs_it_lost(
    alice: Client, model_with: ModelFactory, tmp_path: Path
) -> None:
    model, slow = model_with(""), model_with("delay/1500")
    with private_redis() as redis:
        env = {**server_env(), "REDIS_URL": redis.url, "BEASTMODE_JOB_RESEND_AFTER_S": "1"}
        node = start_gateway("worker-outage", env)
        try:
            wait_for_key(node, alice)
            with worker(env, tmp_path, "survivor") as survivor:
                wait_for_job(node, alice, submit(node, alice, model)[0], "succeeded")
                running = submit(node, alice, slow)[0]  # unacknowledged when Redis goes
                wait_until(lambda: AsyncJob.objects.get(pk=running).status == "running", 10)
                redis.kill()
                log = tmp_path / "survivor.log"
                wait_until(lambda: b"Connection to broker lost" in log.read_bytes(), 10)
                lost = a_job(alice, model)  # queued, its message lost with Redis's memory
                redis.start()

                wait_for_job(node, alice, lost, "succeeded")  # the beat's reaper sent it again
                wait_for_job(node, alice, running, "succeeded")
                wait_for_job(node, alice, submit(node, alice, model)[0], "succeeded")
                assert survivor.poll() is None, log.read_text()
        finally:
            stop_process(node)
