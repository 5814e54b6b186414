"""Identical concurrent misses share one upstream call, whatever becomes of it: through
the live gateway first, then the waiting rules on their own."""

import asyncio
import contextlib
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from beastmode.lib.chat_request import check_chat_body
from cache import flights, layers
from cache import service as cache_service
from cache.models import CacheEntry
from cache.policy import CachePolicy
from monitoring.models import RequestRecord
from routing import router
from routing.registry import EndpointConfig, RouteConfig
from tests.personas import Client, ModelFactory, record_for, wait_for_key, wait_for_model
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

pytestmark = pytest.mark.embedded


def ask(gateway: Process, client: Client, model: str, text: str, **extra: object) -> Reply:
    body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    url = f"{gateway.url}/v1/chat/completions"
    return http(url, method="POST", key=client.key, body=body)


def ask_together(
    gateway: Process, client: Client, model: str, text: str, streams: list[bool]
) -> list[Reply]:
    """Identical requests sent at once, streaming or not as `streams` says."""
    with ThreadPoolExecutor(max_workers=len(streams)) as pool:
        return list(
            pool.map(lambda stream: ask(gateway, client, model, text, stream=stream), streams)
        )


def answer_of(reply: Reply) -> tuple[str, str]:
    """The answer's text and finish reason, from a plain or a streamed reply."""
    if not reply.headers["content-type"].startswith("text/event-stream"):
        choice = reply.json()["choices"][0]
        return choice["message"]["content"], choice["finish_reason"]
    events = [line[6:] for line in reply.body.decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    choices = [choice for chunk in chunks for choice in chunk["choices"]]
    text = "".join(choice["delta"].get("content") or "" for choice in choices)
    return text, next(c["finish_reason"] for c in choices if c["finish_reason"])


def records_of(replies: list[Reply]) -> list[RequestRecord]:
    ids = [reply.headers["x-request-id"] for reply in replies]
    assert len(set(ids)) == len(ids), "every request has its own request id"
    wait_until(lambda: RequestRecord.objects.filter(request_id__in=ids).count() == len(ids))
    return list(RequestRecord.objects.filter(request_id__in=ids))


def test_identical_requests_share_an_answer_that_is_not_stored(
    gateway: Process, fake_upstream: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("delay/300/length")
    path = "/delay/300/length/v1/chat/completions"
    before = upstream_hits(fake_upstream, path)

    replies = ask_together(gateway, alice, model, "cut short", [False] * 6)

    assert upstream_hits(fake_upstream, path) - before == 1
    assert all(reply.status == 200 for reply in replies)
    answer = (f"Echo from {model}-ep0-model: cut short", "length")
    assert all(answer_of(reply) == answer for reply in replies)
    assert sorted(r.headers["x-beastmode-cache"] for r in replies) == ["exact"] * 5 + ["miss"]
    assert not any("x-beastmode-cache-tier" in reply.headers for reply in replies)

    records = records_of(replies)
    followers = [r for r in records if r.cache_outcome == "exact"]
    assert len(followers) == 5 and all(r.outcome == "success" for r in records)
    assert all(r.cache_tier == "" and r.cache_entry_key == "" for r in followers)
    assert all(r.saved_tokens_out > 0 and r.cost_usd == 0 for r in followers)
    # Shared, never stored: the next identical request goes upstream again.
    assert ask(gateway, alice, model, "cut short").headers["x-beastmode-cache"] == "miss"
    assert upstream_hits(fake_upstream, path) - before == 2
    assert CacheEntry.objects.filter(model=model).count() == 0


def test_streaming_and_plain_requests_share_a_truncated_answer(
    gateway: Process, fake_upstream: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("delay/300/length")
    path = "/delay/300/length/v1/chat/completions"
    before = upstream_hits(fake_upstream, path)

    replies = ask_together(gateway, alice, model, "mixed", [True, False] * 3)

    assert upstream_hits(fake_upstream, path) - before == 1
    answer = (f"Echo from {model}-ep0-model: mixed", "length")
    assert [answer_of(reply) for reply in replies] == [answer] * 6
    streamed = [r for r in replies[::2] if r.headers["content-type"].startswith("text/event")]
    assert len(streamed) == 3


def test_when_the_leader_fails_one_follower_calls_upstream_and_the_others_get_its_answer(
    gateway: Process, fake_upstream: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("delay/300/flaky/1/one-failure")
    path = "/delay/300/flaky/1/one-failure/v1/chat/completions"

    replies = ask_together(gateway, alice, model, "after a failure", [False] * 6)

    assert (upstream_hits(fake_upstream, path), upstream_peak(fake_upstream, path)) == (2, 1)
    assert sorted(reply.status for reply in replies) == [200] * 5 + [502]
    served = [r for r in replies if r.status == 200]
    assert sorted(r.headers["x-beastmode-cache"] for r in served) == ["exact"] * 4 + ["miss"]
    outcomes = sorted((r.outcome, r.cache_outcome) for r in records_of(replies))
    failed, new_leader = ("upstream_error", "miss"), ("success", "miss")
    assert outcomes == [("success", "exact")] * 4 + [new_leader, failed]


def test_an_upstream_that_keeps_failing_is_called_by_one_request_at_a_time(
    gateway: Process, fake_upstream: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("delay/200/status/500")  # (a path of this test only: peaks add up)
    path = "/delay/200/status/500/v1/chat/completions"

    replies = ask_together(gateway, alice, model, "keeps failing", [False, True] * 3)

    assert upstream_peak(fake_upstream, path) == 1
    assert all(reply.status >= 500 for reply in replies)
    assert all(r.outcome == "upstream_error" for r in records_of(replies))


def test_followers_of_a_cancelled_leader_neither_hang_nor_stampede(
    fake_upstream: Process, alice: Client, model_with: ModelFactory
) -> None:
    # daphne cancels a request 1 s after its client left (10 s by default).
    fresh = start_gateway("close-timeout", daphne_args=("--application-close-timeout", "1"))
    try:
        wait_for_key(fresh, alice)
        model = model_with("delay/4000", first_byte_timeout_s=10, total_timeout_s=10)
        wait_for_model(fresh, alice, model)
        before = upstream_hits(fake_upstream, "/delay/4000/v1/chat/completions")
        started = time.monotonic()
        leader = send_and_stay(fresh, alice, model, "left early", request_id="leader-who-left")
        time.sleep(0.3)
        with ThreadPoolExecutor(max_workers=4) as pool:
            pending = [pool.submit(ask, fresh, alice, model, "left early") for _ in range(4)]
            time.sleep(0.2)
            leader.close()
            replies = [future.result(timeout=20) for future in pending]
    finally:
        stop_process(fresh)

    assert time.monotonic() - started < 12
    assert all(reply.status == 200 for reply in replies)
    assert upstream_hits(fake_upstream, "/delay/4000/v1/chat/completions") - before == 2
    assert sorted(r.headers["x-beastmode-cache"] for r in replies) == ["exact"] * 3 + ["miss"]
    left = record_for("leader-who-left")
    assert (left.status_code, left.outcome) == (499, "client_disconnected")


def send_and_stay(
    gateway: Process, client: Client, model: str, text: str, *, request_id: str
) -> socket.socket:
    """A request whose client keeps the connection open until the test closes it."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": text}]})
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {client.key}\r\nX-Request-Id: {request_id}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock = socket.create_connection(("127.0.0.1", gateway.port))
    sock.sendall(head.encode() + body.encode())
    return sock


# --- the waiting rules, in one event loop ---------------------------------------------


@pytest.fixture
def one_process(settings: Any) -> None:
    """The rules of one process: without Redis it shares flights with no other."""
    settings.REDIS_URL = ""


def a_plan(text: str = "same") -> cache_service.CachePlan:
    chat = check_chat_body({"model": "m", "messages": [{"role": "user", "content": text}]})
    plan = cache_service.plan(
        namespace="key:k", policy=CachePolicy(), chat=chat, cache_control=None
    )
    assert plan is not None
    return plan


COMPLETION: dict[str, Any] = {
    "choices": [{"index": 0, "message": {"content": "hi"}, "finish_reason": "length"}]
}


async def join(
    scope: contextlib.AsyncExitStack, plan: cache_service.CachePlan, budget_s: float = 60.0
) -> flights.Flight:
    """Join the flight of `plan`'s key until `scope` closes (as a request's `async with`)."""
    return await scope.enter_async_context(flights.coalesce(plan, budget_s=budget_s))


async def settle() -> None:
    """Let every task that can run, run (one event loop, no I/O: deterministic)."""
    for _ in range(20):
        await asyncio.sleep(0)


@pytest.mark.usefixtures("one_process")
def test_after_a_failed_leader_exactly_one_follower_leads_and_the_others_keep_waiting() -> None:
    async def scenario() -> None:
        plan = a_plan()
        scopes = [contextlib.AsyncExitStack() for _ in range(4)]
        leader = await join(scopes[0], plan)
        followers = [asyncio.create_task(join(scope, plan)) for scope in scopes[1:]]
        await settle()
        assert leader.leads and not any(f.done() for f in followers)

        await scopes[0].aclose()  # the leader leaves without an answer
        await settle()

        leading = [f for f in followers if f.done()]
        assert len(leading) == 1 and leading[0].result().leads
        leading[0].result().share(COMPLETION, "ep", None)
        answers = [(await f).answer for f in followers if f not in leading]
        assert [(a.entry.response, a.tier) for a in answers if a] == [(COMPLETION, "")] * 2
        for scope in scopes:
            await scope.aclose()
        assert not flights._flights

    asyncio.run(scenario())


@pytest.mark.usefixtures("one_process")
def test_a_cancelled_follower_leaves_the_answer_to_the_others() -> None:
    async def scenario() -> None:
        plan = a_plan()
        async with contextlib.AsyncExitStack() as scope:
            leader = await join(scope, plan)
            gone, waiting = (asyncio.create_task(join(scope, plan)) for _ in "ab")
            await settle()
            gone.cancel()
            await settle()
            leader.share(COMPLETION, "ep", None)
            answer = (await waiting).answer
            assert answer is not None and answer.entry.response == COMPLETION

    asyncio.run(scenario())


@pytest.mark.usefixtures("one_process")
def test_a_follower_stops_waiting_for_a_leader_past_its_budget() -> None:
    async def scenario() -> None:
        plan = a_plan()
        async with contextlib.AsyncExitStack() as scope:
            assert (await join(scope, plan)).leads  # and never answers
            started = time.monotonic()
            alone = await join(scope, plan, budget_s=0.05)
            assert time.monotonic() - started == pytest.approx(0.05, abs=0.04)
            assert not alone.leads and alone.answer is None  # goes upstream on its own

    asyncio.run(scenario())


def test_a_follower_waits_as_long_as_the_routes_worst_case() -> None:
    endpoint = EndpointConfig(
        id=1, name="ep", provider="openai", base_url="http://127.0.0.1:9/v1",
        upstream_model="m", api_key="", connect_timeout_s=1, first_byte_timeout_s=1,
        total_timeout_s=20, max_retries=2, input_cost_per_1m=1, output_cost_per_1m=1,
    )  # fmt: skip
    route = RouteConfig(model_name="m", endpoints=(endpoint, endpoint))
    assert router.worst_case_s(route) == 2 * 20  # (the total timeout bounds the retries)


def test_a_request_about_to_lead_takes_the_answer_that_landed_during_its_lookup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counted: list[str] = []
    monkeypatch.setattr(cache_service.lower_writer, "count_hit", counted.append)

    async def scenario() -> None:
        plan = a_plan("landed during my lookup")
        completion = {
            "choices": [{"index": 0, "message": {"content": "hi"}, "finish_reason": "stop"}]
        }
        entry = cache_service.entry_for(plan, completion, "ep", time.time())

        def leader_lands_meanwhile(*_: object) -> None:  # while this one reads L2 and L3
            layers.tiers().l1.put(entry, time.time())

        monkeypatch.setattr(cache_service, "_lower_tier_hit", leader_lands_meanwhile)
        answer = await cache_service.lookup(plan)  # (then the answer service would lead)

        assert answer is not None and answer.entry == entry
        assert (answer.kind, answer.tier) == ("exact", "L1")
        assert counted == [entry.key]

    asyncio.run(scenario())


@pytest.mark.usefixtures("one_process")
def test_a_leader_leaving_after_it_answered_leaves_the_next_leaders_flight_alone() -> None:
    async def scenario() -> None:
        plan = a_plan("landed twice")
        first_scope, second_scope, follower_scope = (contextlib.AsyncExitStack() for _ in "abc")
        first = await join(first_scope, plan)
        first.share(COMPLETION, "ep", None)
        second = await join(second_scope, plan)
        assert second.leads  # the next request leads
        follower = asyncio.create_task(join(follower_scope, plan))
        await settle()

        await first_scope.aclose()  # the first leader's exit, after it sent its answer

        await settle()
        assert not follower.done(), "still waiting for the second leader"
        second.share(COMPLETION, "ep", None)
        answer = (await follower).answer
        assert answer is not None and answer.entry.response == COMPLETION
        await second_scope.aclose()
        await follower_scope.aclose()

    asyncio.run(scenario())
