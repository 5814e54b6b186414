"""The exact cache through the live gateway: hits, isolation, tiers, TTL, controls, streams."""

import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from django.conf import settings

from cache.models import CacheEntry, CacheNamespace
from gateway import tasks
from gateway.models import WarmupPrompt
from monitoring.models import RequestRecord
from routing.models import ServiceKey
from routing.service_keys import assign_new_key
from tests.personas import Client, ModelFactory, make_client, record_for, wait_for_key
from tests.processes import (
    Process,
    Reply,
    http,
    start_gateway,
    stop_process,
    upstream_hits,
    wait_until,
)

pytestmark = pytest.mark.embedded


def ask(
    gateway: Process,
    client: Client,
    model: str,
    text: str = "cache me",
    headers: dict[str, str] | None = None,
    **extra: object,
) -> Reply:
    body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    url = f"{gateway.url}/v1/chat/completions"
    return http(url, method="POST", key=client.key, body=body, headers=headers)


def stored(model: str) -> int:
    return CacheEntry.objects.filter(model=model).count()


def wait_for_l3_writes(gateway: Process, client: Client, model_with: ModelFactory) -> None:
    """Return once every answer `gateway` stored so far is in L3: its one writer thread
    writes in order, so a storable answer asked now reaching L3 means the earlier ones
    did, if they were stored at all."""
    barrier = model_with("")
    ask(gateway, client, barrier, "barrier")
    wait_until(lambda: stored(barrier) == 1)


def test_a_repeated_request_is_an_exact_hit_that_saves_its_cost(
    gateway: Process, fake_upstream: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("")
    first = ask(gateway, alice, model)
    second = ask(gateway, alice, model)

    assert first.headers["x-beastmode-cache"] == "miss"
    assert second.headers["x-beastmode-cache"] == "exact"
    assert second.headers["x-beastmode-cache-tier"] == "L1"
    assert second.json()["choices"] == first.json()["choices"]
    assert upstream_hits(fake_upstream, "/v1/chat/completions") >= 1
    record = record_for(second.headers["x-request-id"])
    assert (record.cache_outcome, record.cache_tier, record.endpoint) == ("exact", "L1", "")
    assert (record.saved_tokens_in, record.saved_tokens_out) == (2, 5)
    assert record.cost_saved_usd == pytest.approx(12e-6)  # $1 and $2 per 1M tokens
    assert record.cost_usd == 0 and record.tokens_out == 0
    assert record_for(first.headers["x-request-id"]).cache_outcome == "miss"
    wait_until(lambda: stored(model) == 1)


def test_one_tenants_answers_are_never_served_to_another(
    gateway: Process, alice: Client, bob: Client, model_with: ModelFactory
) -> None:
    model = model_with("", model_name="bob-only")
    ask(gateway, alice, model, "secret plans")

    reply = ask(gateway, bob, model, "secret plans")

    assert reply.headers["x-beastmode-cache"] == "miss"


def test_keys_in_a_shared_namespace_share_answers(
    gateway: Process, transactional_db: None, model_with: ModelFactory
) -> None:
    team = CacheNamespace.objects.create(name="search-team")
    carol = make_client("carol-indexer")
    dave = make_client("dave-ranker")
    ServiceKey.objects.filter(pk__in=[carol.key_id, dave.key_id]).update(cache_namespace=team)
    ServiceKey.objects.get(pk=carol.key_id).save()  # moves the registry version
    wait_for_key(gateway, carol)
    model = model_with("")

    def shared() -> bool:
        ask(gateway, carol, model, "shared question")
        return ask(gateway, dave, model, "shared question").headers["x-beastmode-cache"] == "exact"

    wait_until(shared)


def make_member(name: str, namespace: CacheNamespace) -> Client:
    """A key created in a shared namespace (so no gateway ever sees it outside)."""
    row = ServiceKey(name=name, cache_namespace=namespace)
    raw_key = assign_new_key(row)
    row.save()
    return Client(name=name, key=raw_key, key_id=row.id)


def test_a_namespace_deleted_and_created_again_does_not_inherit_its_answers(
    gateway: Process, model_with: ModelFactory
) -> None:
    model = model_with("")
    old_team = CacheNamespace.objects.create(name="team")
    carol = wait_for_key(gateway, make_member("carol-indexer", old_team))
    ask(gateway, carol, model, "team secret")
    assert ask(gateway, carol, model, "team secret").headers["x-beastmode-cache"] == "exact"

    old_team.delete()
    new_team = CacheNamespace.objects.create(name="team")
    erin = wait_for_key(gateway, make_member("erin-newcomer", new_team))

    assert ask(gateway, erin, model, "team secret").headers["x-beastmode-cache"] == "miss"


def test_deleting_a_namespace_reaches_the_running_gateway(
    gateway: Process, model_with: ModelFactory
) -> None:
    model = model_with("")
    team = CacheNamespace.objects.create(name="team")
    carol = wait_for_key(gateway, make_member("carol-indexer", team))
    dave = wait_for_key(gateway, make_member("dave-ranker", team))
    ask(gateway, carol, model, "shared question")
    assert ask(gateway, dave, model, "shared question").headers["x-beastmode-cache"] == "exact"

    team.delete()  # the keys go back to their own namespaces

    wait_until(
        lambda: ask(gateway, dave, model, "shared question", cache={"no-store": True})
        .headers["x-beastmode-cache"] == "miss"
    )  # fmt: skip


def test_a_renamed_namespace_keeps_sharing_with_processes_that_loaded_it_before(
    gateway: Process, model_with: ModelFactory
) -> None:
    model = model_with("")
    team = CacheNamespace.objects.create(name="team")
    carol = wait_for_key(gateway, make_member("carol-indexer", team))
    team.name = "search-team"
    team.save()
    prompt = WarmupPrompt.objects.create(
        service_key_id=carol.key_id, model=model,
        messages=[{"role": "user", "content": "renamed question"}],
    )  # fmt: skip

    assert tasks.warm_prompt.apply(args=[prompt.id]).get() == "stored"  # a fresh registry

    wait_until(
        lambda: ask(gateway, carol, model, "renamed question", cache={"no-store": True})
        .headers["x-beastmode-cache"] == "exact"
    )  # fmt: skip


def test_errors_and_truncated_answers_are_never_stored(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    truncated = model_with("length")
    failing = model_with("status/500")
    for _ in range(2):
        assert ask(gateway, alice, truncated).headers["x-beastmode-cache"] == "miss"
        assert ask(gateway, alice, failing).status == 502
    wait_for_l3_writes(gateway, alice, model_with)
    assert stored(truncated) == 0 and stored(failing) == 0


def test_a_cut_stream_is_not_stored(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("cut")
    reply = ask(gateway, alice, model, stream=True)
    assert b"stream_interrupted" in reply.body
    wait_for_l3_writes(gateway, alice, model_with)
    assert stored(model) == 0


def test_ttl_from_the_request_expires_the_answer(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("")
    ask(gateway, alice, model, cache={"ttl": 1})
    assert ask(gateway, alice, model).headers["x-beastmode-cache"] == "exact"
    time.sleep(1.2)
    assert ask(gateway, alice, model).headers["x-beastmode-cache"] == "miss"


def test_request_controls_no_cache_no_store_and_max_age(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("")
    assert (
        ask(gateway, alice, model, "a", cache={"no-store": True}).headers["x-beastmode-cache"]
        == "miss"
    )
    assert ask(gateway, alice, model, "a").headers["x-beastmode-cache"] == "miss", "nothing stored"
    assert ask(gateway, alice, model, "a").headers["x-beastmode-cache"] == "exact"
    assert (
        ask(gateway, alice, model, "a", cache={"no-cache": True}).headers["x-beastmode-cache"]
        == "miss"
    )
    fresh_only = ask(gateway, alice, model, "a", headers={"Cache-Control": "max-age=0"})
    assert fresh_only.headers["x-beastmode-cache"] == "miss"
    bad = ask(gateway, alice, model, "a", cache={"ttl": "soon"})
    assert bad.status == 400 and bad.json()["error"]["param"] == "cache"


def test_a_ttl_of_zero_stores_nothing(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("")
    assert ask(gateway, alice, model, cache={"ttl": 0}).headers["x-beastmode-cache"] == "miss"
    assert ask(gateway, alice, model).headers["x-beastmode-cache"] == "miss"


@pytest.mark.parametrize(
    ("cache", "cache_control"),
    [
        ({"ttl": 10**12}, None),  # beyond a year: its expiry would not fit a timestamp
        ({"ttl": 1.5}, None),
        ({"ttl": -1}, None),
        (None, "max-age=+5"),
        (None, "max-age=1.5"),
    ],
)
def test_bad_cache_controls_get_400_and_a_record(
    gateway: Process,
    alice: Client,
    model_with: ModelFactory,
    cache: dict[str, object] | None,
    cache_control: str | None,
) -> None:
    model = model_with("")
    extra = {"cache": cache} if cache is not None else {}
    headers = {"Cache-Control": cache_control} if cache_control else None
    reply = ask(gateway, alice, model, headers=headers, **extra)
    assert reply.status == 400 and reply.json()["error"]["param"] == "cache"
    record = record_for(reply.headers["x-request-id"])
    assert (record.status_code, record.error_class) == (400, "invalid_request")


@pytest.mark.parametrize("ttl", [float("inf"), 1e400, float("nan")])
def test_a_ttl_that_is_not_a_json_number_is_refused_as_such(
    gateway: Process, alice: Client, model_with: ModelFactory, ttl: float
) -> None:
    reply = ask(gateway, alice, model_with(""), cache={"ttl": ttl})  # sent as Infinity, NaN
    assert reply.status == 400 and reply.json()["error"]["code"] == "invalid_json"
    assert record_for(reply.headers["x-request-id"]).status_code == 400


def test_identical_concurrent_misses_make_one_upstream_call(
    gateway: Process, fake_upstream: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("delay/300")
    path = "/delay/300/v1/chat/completions"
    before = upstream_hits(fake_upstream, path)

    with ThreadPoolExecutor(max_workers=6) as pool:
        replies = list(pool.map(lambda _: ask(gateway, alice, model, "same time"), range(6)))

    assert all(reply.status == 200 for reply in replies)
    assert upstream_hits(fake_upstream, path) - before == 1
    outcomes = sorted(reply.headers["x-beastmode-cache"] for reply in replies)
    assert outcomes == ["exact"] * 5 + ["miss"]


def test_a_streamed_answer_is_replayed_as_sse_and_serves_plain_requests_too(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("")
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=alice.key, max_retries=0)
    messages = [{"role": "user", "content": "stream then replay"}]

    def streamed() -> tuple[str, str]:
        with client.chat.completions.with_streaming_response.create(
            model=model, messages=messages, stream=True, stream_options={"include_usage": True}
        ) as response:
            chunks = list(response.parse())
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert chunks[-1].usage is not None
            return response.headers["x-beastmode-cache"], text

    first, replayed = streamed(), streamed()
    assert first[0] == "miss" and replayed[0] == "exact"
    assert replayed[1] == first[1] == f"Echo from {model}-ep0-model: stream then replay"

    plain = client.chat.completions.with_raw_response.create(model=model, messages=messages)
    assert plain.headers["x-beastmode-cache"] == "exact"
    assert plain.parse().choices[0].message.content == first[1]


def test_a_plain_answer_serves_a_streaming_request(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("")
    ask(gateway, alice, model, "plain first")
    reply = ask(gateway, alice, model, "plain first", stream=True)
    assert reply.headers["x-beastmode-cache"] == "exact"
    assert reply.headers["content-type"].startswith("text/event-stream")
    assert reply.body.endswith(b"data: [DONE]\n\n")


def test_after_a_restart_answers_come_from_the_lower_tiers_and_are_promoted(
    gateway: Process, alice: Client, bob: Client, model_with: ModelFactory
) -> None:
    model = model_with("", model_name="bob-only")
    ask(gateway, alice, model, "survives restarts")
    wait_until(lambda: stored(model) == 1)
    fresh = start_gateway("restarted")
    try:
        lower = "L2" if settings.REDIS_URL else "L3"
        first = ask(fresh, alice, model, "survives restarts")
        assert (first.headers["x-beastmode-cache"], first.headers["x-beastmode-cache-tier"]) == (
            "exact", lower,
        )  # fmt: skip
        assert (
            ask(fresh, alice, model, "survives restarts").headers["x-beastmode-cache-tier"] == "L1"
        )
        assert ask(fresh, bob, model, "survives restarts").headers["x-beastmode-cache"] == "miss"
    finally:
        stop_process(fresh)


def test_every_hit_and_miss_is_recorded(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("")
    ids = [ask(gateway, alice, model, f"q{i % 3}").headers["x-request-id"] for i in range(9)]
    wait_until(lambda: RequestRecord.objects.filter(request_id__in=ids).count() == 9)
    outcomes = list(
        RequestRecord.objects.filter(request_id__in=ids).values_list("cache_outcome", flat=True)
    )
    assert sorted(outcomes) == ["exact"] * 6 + ["miss"] * 3


def test_every_hit_is_counted_on_its_cache_entry(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("")
    for _ in range(4):  # a miss, then three hits in a burst, before the entry reaches L3
        ask(gateway, alice, model, "count my hits")

    def hits() -> int | None:
        return CacheEntry.objects.filter(model=model).values_list("hits", flat=True).first()

    assert wait_until(lambda: hits() == 3, timeout_s=15)
    ask(gateway, alice, model, "count my hits")  # one more, long after the entry was written
    assert wait_until(lambda: hits() == 4, timeout_s=15)
