"""One upstream call for identical concurrent misses across processes and nodes: the
claims in the real Redis (cache/shared_flights.py), then two daphne nodes and a worker."""

import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings

from cache import shared_flights
from tests.cache.test_flights import answer_of, ask, records_of
from tests.gateway.test_jobs import wait_for_job
from tests.personas import Client, ModelFactory, wait_for_key, wait_for_model
from tests.processes import (
    Process,
    Reply,
    http,
    start_gateway,
    stop_process,
    upstream_hits,
    upstream_peak,
    wait_until,
)

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis")


def an_entry(key: str) -> shared_flights.Entry:
    return shared_flights.Entry(
        key=key, namespace="key:k", model="m", partition="p", prompt_text="hi",
        semantic_eligible=False, request={}, response={"choices": []}, tokens_in=1,
        tokens_out=1, endpoint="ep", created_at=time.time(), expires_at=time.time() + 60,
    )  # fmt: skip


def test_the_first_claim_leads_and_the_others_follow_until_its_stored_answer_lands() -> None:
    key = secrets.token_hex(8)
    assert shared_flights.claim(key, "a", 5).leads
    assert shared_flights.claim(key, "b", 5) == shared_flights.Claim(leader="a")

    shared_flights.land(key, "a", an_entry(key), stored=True)

    # A follower, and a request that missed L2 just before the answer was stored, take it.
    for claim in (shared_flights.claim(key, "b", 5, "a"), shared_flights.claim(key, "c", 5)):
        assert claim.answer is not None and claim.answer[0].key == key and claim.answer[1]


def test_an_answer_that_is_not_stored_goes_to_the_followers_of_its_leader_only() -> None:
    key = secrets.token_hex(8)
    assert shared_flights.claim(key, "a", 5).leads
    assert shared_flights.claim(key, "b", 5).leader == "a"

    shared_flights.land(key, "a", an_entry(key), stored=False)

    followed = shared_flights.claim(key, "b", 5, "a")
    assert followed.answer is not None and followed.answer[1] is False
    assert shared_flights.claim(key, "c", 5).leads  # a later request asks upstream


def test_a_leader_that_fails_or_dies_hands_over_to_the_next_claim() -> None:
    failed, died = secrets.token_hex(8), secrets.token_hex(8)
    assert shared_flights.claim(failed, "a", 5).leads
    shared_flights.drop(failed, "a")
    assert shared_flights.claim(failed, "b", 5).leads

    assert shared_flights.claim(died, "a", 0.05).leads  # and never lands: its claim expires
    wait_until(lambda: shared_flights.claim(died, "b", 5).leads, timeout_s=2)


def test_only_its_own_leader_lands_or_drops_a_claim() -> None:
    key = secrets.token_hex(8)
    assert shared_flights.claim(key, "a", 5).leads
    shared_flights.drop(key, "b")
    shared_flights.land(key, "b", an_entry(key), stored=True)
    assert shared_flights.claim(key, "c", 5) == shared_flights.Claim(leader="a")


# --- two nodes ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def nodes(django_db_setup: None) -> Iterator[tuple[Process, Process]]:
    a, b = start_gateway("flight-a"), start_gateway("flight-b")
    yield a, b
    stop_process(a)
    stop_process(b)


def ask_both(nodes: tuple[Process, Process], client: Client, model: str, text: str) -> list[Reply]:
    """20 identical requests at once, 10 to each node, half of them streamed."""
    sends = [(node, stream) for node in nodes for stream in [True, False] * 5]
    with ThreadPoolExecutor(max_workers=len(sends)) as pool:
        return list(pool.map(lambda s: ask(s[0], client, model, text, stream=s[1]), sends))


def submit(node: Process, client: Client, model: str, text: str) -> tuple[Process, str]:
    """An async job (a worker answers it); the node and the job's id."""
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    reply = http(f"{node.url}/v1/chat/completions", method="POST", key=client.key,
                 headers={"X-BeastMode-Async": "true"}, body=body)  # fmt: skip
    assert reply.status == 202, reply.body
    return node, reply.json()["id"]


def ready(nodes: tuple[Process, Process], client: Client, model: str) -> None:
    for node in nodes:
        wait_for_model(node, wait_for_key(node, client), model)


@pytest.mark.usefixtures("celery_worker")
def test_identical_requests_to_two_nodes_and_a_worker_make_one_upstream_call(
    nodes: tuple[Process, Process], fake_upstream: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("delay/400")
    ready(nodes, alice, model)
    path = "/delay/400/v1/chat/completions"
    text = "one call for the cluster"
    before = upstream_hits(fake_upstream, path)

    with ThreadPoolExecutor(max_workers=1) as pool:
        jobs = pool.submit(lambda: [submit(node, alice, model, text) for node in nodes])
        replies = ask_both(nodes, alice, model, text)

    assert upstream_hits(fake_upstream, path) - before == 1
    answer = (f"Echo from {model}-ep0-model: {text}", "stop")
    assert [answer_of(reply) for reply in replies] == [answer] * 20
    outcomes = sorted(r.cache_outcome for r in records_of(replies))
    assert outcomes == ["exact"] * 19 + ["miss"]
    for node, job_id in jobs.result():
        result = wait_for_job(node, alice, job_id, "succeeded")["result"]
        assert result["choices"][0]["message"]["content"] == answer[0]


def test_when_the_leader_fails_one_request_in_the_cluster_calls_upstream_again(
    nodes: tuple[Process, Process], fake_upstream: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("delay/300/flaky/1/cluster-failure")
    ready(nodes, alice, model)
    path = "/delay/300/flaky/1/cluster-failure/v1/chat/completions"

    replies = ask_both(nodes, alice, model, "after a failure in the cluster")

    assert (upstream_hits(fake_upstream, path), upstream_peak(fake_upstream, path)) == (2, 1)
    failed = [r for r in replies if r.status != 200 and not r.body.startswith(b"data:")]
    streamed_errors = [r for r in replies if b'"error"' in r.body and r.status == 200]
    assert len(failed) + len(streamed_errors) == 1
    outcomes = sorted(r.outcome for r in records_of(replies))
    assert outcomes == ["success"] * 19 + ["upstream_error"]
