"""Service keys' limits as clients meet them: through the openai SDK, on gateways that
share the real Redis, with Redis killed, at a budget period's end."""

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import openai
import pytest

from beastmode.lib.chat_request import parse_chat_request
from beastmode.lib.errors import GatewayError
from devtools.servers import private_redis
from gateway import limits
from routing import registry
from routing.models import KeySpend
from routing.service_keys import create_service_key
from tests.personas import Client, ModelFactory, make_client, record_for, wait_for_key
from tests.processes import (
    Process,
    http,
    server_env,
    start_gateway,
    stop_process,
    upstream_hits,
    wait_until,
)


def sdk(gateway: Process, client: Client) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=client.key, max_retries=0)


def ask(api: openai.OpenAI, model: str, text: str, **kwargs: Any) -> Any:
    """The raw response (headers and the parsed completion)."""
    messages = [{"role": "user", "content": text}]
    return api.chat.completions.with_raw_response.create(model=model, messages=messages, **kwargs)


def refusal(api: openai.OpenAI, model: str, text: str, **kwargs: Any) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as refused:
        ask(api, model, text, **kwargs)
    return refused.value


def key_info(gateway: Process, client: Client) -> dict[str, Any]:
    reply = http(f"{gateway.url}/v1/key/info", key=client.key)
    assert reply.status == 200, reply.body
    return reply.json()


def limited(gateway: Process, name: str, **limits_: Any) -> Client:
    return wait_for_key(gateway, make_client(name, **limits_))


@pytest.mark.embedded  # Redis's state in the first pass, the process's in the other
@pytest.mark.django_db(transaction=True)
def test_over_its_requests_per_minute_a_key_gets_429_with_retry_after_and_a_record(
    gateway: Process, model_with: ModelFactory
) -> None:
    model = model_with("")
    api = sdk(gateway, limited(gateway, "rpm-2", rpm=2))
    first = ask(api, model, "one")
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert ask(api, model, "two").headers["x-ratelimit-remaining-requests"] == "0"

    refused = refusal(api, model, "three")
    assert isinstance(refused, openai.RateLimitError)
    assert refused.code == "rate_limit_exceeded"
    assert refused.body["type"] == "requests"  # type: ignore[index]
    assert "requests per min (RPM): Limit 2" in refused.message
    assert 25 <= int(refused.response.headers["retry-after"]) <= 31  # a slot every 30 s
    assert refused.response.headers["x-ratelimit-remaining-requests"] == "0"
    record = record_for(refused.response.headers["x-request-id"])
    assert (record.outcome, record.status_code, record.error_class) == (
        "rate_limited", 429, "rate_limit_exceeded"
    )  # fmt: skip
    metrics = http(f"{gateway.url}/metrics").body.decode()
    assert f'beastmode_requests_total{{model="{model}",outcome="rate_limited"}} 1.0' in metrics


@pytest.mark.embedded
@pytest.mark.django_db(transaction=True)
def test_tokens_count_as_the_upstream_reports_them_and_a_hit_costs_none(
    gateway: Process, model_with: ModelFactory
) -> None:
    model = model_with("usage/600")  # the upstream says every prompt is 600 tokens
    client = limited(gateway, "tpm-1000", tpm=1000)
    api = sdk(gateway, client)
    first = ask(api, model, "hello")
    assert first.headers["x-ratelimit-limit-tokens"] == "1000"
    used = 600 + first.parse().usage.completion_tokens
    wait_until(lambda: key_info(gateway, client)["rate_limits"]["tokens"]["remaining"] < 1000 - 300)
    remaining = key_info(gateway, client)["rate_limits"]["tokens"]["remaining"]
    assert 1000 - used <= remaining <= 1000 - used + 20  # (it refills 17 tokens a second)

    hit = ask(api, model, "hello")  # the same question: answered by the cache
    assert hit.headers["x-beastmode-cache"] == "exact"
    assert ask(api, model, "second").parse().usage.prompt_tokens == 600  # 1,200 in all
    wait_until(lambda: key_info(gateway, client)["rate_limits"]["tokens"]["remaining"] == 0)

    refused = refusal(api, model, "third")
    assert isinstance(refused, openai.RateLimitError)
    assert refused.body["type"] == "tokens"  # type: ignore[index]
    assert "tokens per min (TPM): Limit 1000" in refused.message
    assert ask(api, model, "hello").headers["x-beastmode-cache"] == "exact"  # hits still free


@pytest.mark.embedded
@pytest.mark.django_db(transaction=True)
def test_a_request_larger_than_the_token_limit_is_refused_without_retry(
    gateway: Process, model_with: ModelFactory
) -> None:
    model = model_with("")
    api = sdk(gateway, limited(gateway, "tpm-100", tpm=100))
    refused = refusal(api, model, "write a long essay", max_tokens=500)
    assert isinstance(refused, openai.RateLimitError)
    assert "Request too large" in refused.message and "Requested 5" in refused.message
    assert refused.response.headers["x-should-retry"] == "false"


@pytest.mark.embedded
@pytest.mark.django_db(transaction=True)
def test_a_stream_counts_its_tokens_when_it_ends(
    gateway: Process, model_with: ModelFactory
) -> None:
    model = model_with("")
    client = limited(gateway, "tpm-stream", tpm=1000)
    api = sdk(gateway, client)
    words = " ".join(["word"] * 600)  # the upstream counts 600 prompt tokens; we guess 750
    chunks = list(api.chat.completions.create(
        model=model, messages=[{"role": "user", "content": words}], stream=True
    ))  # fmt: skip
    assert chunks[-1].choices[0].finish_reason == "stop"
    # 600 prompt + about 600 completion tokens: over the minute's 1,000.
    wait_until(lambda: key_info(gateway, client)["rate_limits"]["tokens"]["remaining"] == 0)
    assert isinstance(refusal(api, model, "more"), openai.RateLimitError)


@pytest.mark.embedded
@pytest.mark.django_db(transaction=True)
def test_requests_at_once_are_limited_and_the_slot_comes_back(
    gateway: Process, fake_upstream: Process, model_with: ModelFactory
) -> None:
    slow, fast = model_with("delay/1537"), model_with("")
    api = sdk(gateway, limited(gateway, "one-at-a-time", max_parallel=1))
    results: list[Any] = []
    first = threading.Thread(target=lambda: results.append(ask(api, slow, "slow")))
    first.start()
    wait_until(lambda: upstream_hits(fake_upstream, "/delay/1537/v1/chat/completions"))
    refused = refusal(api, fast, "meanwhile")
    assert isinstance(refused, openai.RateLimitError)
    assert "Too many concurrent requests" in refused.message
    first.join(10)
    assert results and results[0].http_response.status_code == 200
    assert ask(api, fast, "after").http_response.status_code == 200


@pytest.mark.embedded
@pytest.mark.django_db(transaction=True)
def test_a_model_can_have_tighter_limits_than_the_key(
    gateway: Process, model_with: ModelFactory
) -> None:
    precious, cheap = model_with(""), model_with("")
    api = sdk(gateway, limited(gateway, "per-model", rpm=100, model_limits={precious: {"rpm": 1}}))
    assert ask(api, precious, "one").headers["x-ratelimit-limit-requests"] == "1"
    refused = refusal(api, precious, "two")
    assert f"for model '{precious}' on requests per min (RPM): Limit 1" in refused.message
    assert ask(api, cheap, "two").headers["x-ratelimit-remaining-requests"] == "98"


@pytest.mark.embedded
@pytest.mark.django_db(transaction=True)
def test_over_budget_a_key_gets_insufficient_quota_but_cache_hits_stay_free(
    gateway: Process, model_with: ModelFactory
) -> None:
    # 1M prompt tokens at $1 per 1M input tokens: each answer costs just over $1.
    model = model_with("usage/1000000")
    client = limited(gateway, "budget", rpm=5, budget_usd="1.5", budget_period="daily")
    api = sdk(gateway, client)
    ask(api, model, "first")  # spent 0 of 1.5: allowed
    wait_until(lambda: (key_info(gateway, client)["budget"]["spent_usd"] or 0) > 1)
    ask(api, model, "second")  # spent 1 of 1.5: allowed, and now over
    wait_until(lambda: key_info(gateway, client)["budget"]["remaining_usd"] == 0)

    refused = refusal(api, model, "third")
    assert isinstance(refused, openai.RateLimitError)
    assert (refused.code, refused.body["type"]) == ("insufficient_quota", "insufficient_quota")  # type: ignore[index]
    tomorrow = key_info(gateway, client)["budget"]["resets_at"]
    assert "daily budget" in refused.message and f"It resets at {tomorrow}" in refused.message
    hit = ask(api, model, "first")
    assert hit.headers["x-beastmode-cache"] == "exact"  # free: served over budget
    assert hit.headers["x-ratelimit-remaining-requests"] == "1"  # but it counts as a request
    durable = KeySpend.objects.filter(service_key_id=client.key_id, bucket_s=86400)
    wait_until(lambda: durable.filter(cost_usd__gt=2).exists())  # written with the records
    assert durable.get().cost_usd < 2.1


@pytest.mark.django_db(transaction=True)
def test_two_gateways_share_one_limit(gateway: Process, model_with: ModelFactory) -> None:
    model = model_with("")
    second = start_gateway("second-node")
    try:
        client = limited(gateway, "cluster", rpm=3)
        wait_for_key(second, client)
        nodes = [sdk(gateway, client), sdk(second, client)]
        for turn in range(3):
            ask(nodes[turn % 2], model, f"question {turn}")
        for api in nodes:
            assert isinstance(refusal(api, model, "one too many"), openai.RateLimitError)
    finally:
        stop_process(second)


@pytest.mark.django_db(transaction=True)
def test_far_from_the_limit_requests_go_at_once_and_the_limit_still_holds_exactly(
    gateway: Process, model_with: ModelFactory
) -> None:
    """Far from its limits a node admits on its view of Redis (no wait); near them it
    waits for Redis: two nodes in turn still get exactly the limit."""
    model = model_with("")
    second = start_gateway("second-view")
    try:
        client = limited(gateway, "many", rpm=40, max_parallel=10)
        wait_for_key(second, client)
        nodes = [sdk(gateway, client), sdk(second, client)]
        remaining = [
            int(ask(nodes[turn % 2], model, f"q{turn}").headers["x-ratelimit-remaining-requests"])
            for turn in range(40)
        ]
        assert remaining[0] == 39 and remaining[-1] == 0
        for api in nodes:
            assert isinstance(refusal(api, model, "one too many"), openai.RateLimitError)
    finally:
        stop_process(second)


@pytest.mark.django_db(transaction=True)
def test_a_busy_process_counts_every_request_in_redis() -> None:
    """Requests far from the limits, 32 at a time in one process as fast as it can take
    them: each is admitted at once, and Redis counts every one (what a process sends goes
    in order over one connection; with a command in flight per request the process ran
    out of connections, and Redis counted nothing for a while)."""
    row, _ = create_service_key("busy", rpm=5000, max_parallel=1000)
    key = registry.load_snapshot().keys_by_hash[row.key_hash]
    chat = parse_chat_request(b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}')

    async def client(name: str) -> None:
        for i in range(50):
            usage = await limits.admit(key, "m", chat, f"{name}-{i}", 30.0)
            await asyncio.sleep(0)  # (the answer)
            limits.settle(usage, 0, 0.0)

    async def busy() -> dict[str, Any]:
        await asyncio.gather(*(client(f"c{c}") for c in range(32)))
        await limits.close()  # sends what is queued
        return await limits.key_info(key)

    remaining = asyncio.run(busy())["rate_limits"]["requests"]["remaining"]
    assert 5000 - 1600 <= remaining <= 5000 - 1600 + 250  # (it refills 83 a second)


@pytest.mark.django_db(transaction=True)
def test_before_a_budget_is_known_requests_go_at_once_and_a_miss_is_still_held_to_it() -> None:
    """A new period (or a Redis that lost the counter): until a miss reads the spend, hits
    are admitted on the view like any others; a miss is still checked against the budget
    before it calls upstream."""
    row, _ = create_service_key("spent-before", rpm=1000, budget_usd=1, budget_period="daily")
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    KeySpend.objects.update_or_create(
        service_key_id=row.id, bucket_s=86400, bucket_start=today, defaults={"cost_usd": 2.0}
    )
    key = registry.load_snapshot().keys_by_hash[row.key_hash]
    chat = parse_chat_request(b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}')

    async def requests() -> list[limits.Usage | None]:
        usages = [await limits.admit(key, "m", chat, f"hit-{i}", 30.0) for i in range(5)]
        with pytest.raises(GatewayError) as refused:  # the fifth turns out a miss
            await limits.charge(usages[-1], key, "m", chat, "hit-4")
        assert refused.value.error_class == "insufficient_quota"
        for usage in usages:
            limits.settle(usage, 0, 0.0)
        await limits.close()
        return usages

    usages = asyncio.run(requests())
    assert all(usage is not None and usage.slots_shared for usage in usages)
    assert [usage.headers[1] for usage in usages if usage] == [  # every one taken in Redis
        (b"x-ratelimit-remaining-requests", str(999 - i).encode()) for i in range(5)
    ]


@pytest.fixture
def gateways_on_a_redis_that_dies() -> Iterator[tuple[Any, Process, Process]]:
    """A Redis of their own, and two gateways on it: one failing open, one closed."""
    with private_redis() as redis_server:
        env = {**server_env(), "REDIS_URL": redis_server.url}
        env.pop("CELERY_BROKER_URL", None)
        open_node = start_gateway("limits-open", env)
        closed_node = start_gateway(
            "limits-closed", {**env, "BEASTMODE_RATE_LIMITS_WITHOUT_REDIS": "closed"}
        )
        try:
            yield redis_server, open_node, closed_node
        finally:
            stop_process(open_node)
            stop_process(closed_node)


@pytest.mark.django_db(transaction=True)
def test_with_redis_down_limits_hold_per_process_or_refuse_as_configured(
    gateways_on_a_redis_that_dies: tuple[Any, Process, Process], model_with: ModelFactory
) -> None:
    redis_server, open_node, closed_node = gateways_on_a_redis_that_dies
    model = model_with("")
    client = make_client("redis-down", rpm=2)
    for node in (open_node, closed_node):
        wait_for_key(node, client)
    redis_server.kill()

    open_api, closed_api = sdk(open_node, client), sdk(closed_node, client)
    assert ask(open_api, model, "one").http_response.status_code == 200
    assert ask(open_api, model, "two").http_response.status_code == 200
    assert isinstance(refusal(open_api, model, "three"), openai.RateLimitError)  # in process

    refused = refusal(closed_api, model, "one")
    assert refused.status_code == 503 and refused.code == "limits_unavailable"
    unlimited = wait_for_key(closed_node, make_client("unlimited"))
    assert ask(sdk(closed_node, unlimited), model, "fine").http_response.status_code == 200


@pytest.mark.embedded  # on Redis in the first pass, in process in the embedded one
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("period", "last_moment", "next_period"),
    [
        ("daily", datetime(2026, 12, 7, 23, 59, 59, tzinfo=UTC), datetime(2026, 12, 8, tzinfo=UTC)),
        ("weekly", datetime(2026, 12, 13, 23, 59, tzinfo=UTC), datetime(2026, 12, 14, tzinfo=UTC)),
        ("monthly", datetime(2026, 12, 31, 23, 59, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
    ],
)
def test_a_budget_resets_when_its_period_ends(
    period: str, last_moment: datetime, next_period: datetime
) -> None:
    row, _ = create_service_key(f"boundary-{period}", budget_usd=5, budget_period=period)
    day = last_moment.replace(hour=0, minute=0, second=0)
    KeySpend.objects.update_or_create(  # (see test_jobs: a row written late under a reused id)
        service_key_id=row.id, bucket_s=86400, bucket_start=day, defaults={"cost_usd": 5.0}
    )
    key = registry.load_snapshot().keys_by_hash[row.key_hash]
    chat = parse_chat_request(b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}')

    async def charge(now: datetime) -> limits.Usage | None:
        return await limits.charge(None, key, "m", chat, "req", now=now)

    with pytest.raises(GatewayError) as refused:
        asyncio.run(charge(last_moment))
    assert refused.value.error_class == "insufficient_quota"
    assert f"It resets at {next_period.isoformat().replace('+00:00', 'Z')}" in refused.value.message
    assert asyncio.run(charge(next_period)) is not None  # a new period, nothing spent in it
