"""Warming: prompts answered before anyone asks, through the router, recorded as warming."""

import time
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from cache.models import CacheEntry
from gateway import tasks
from gateway.models import WarmupPrompt
from monitoring.models import RequestRecord
from routing.models import ServiceKey
from tests.cache.test_exact_cache import ask
from tests.personas import Client, ModelFactory
from tests.processes import Process, upstream_hits, wait_until

pytestmark = pytest.mark.embedded

HELLO = [{"role": "user", "content": "hello"}]


def test_a_warmed_prompt_is_a_hit_on_its_first_request(
    gateway: Process, fake_upstream: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("")
    prompt = WarmupPrompt.objects.create(
        service_key_id=alice.key_id, model=model,
        messages=[{"role": "user", "content": "opening hours?"}],
    )  # fmt: skip

    assert tasks.warm_prompt.apply(args=[prompt.id]).get() == "stored"
    time.sleep(0.5)  # a gateway learns what other processes stored within SEMANTIC_SYNC_S

    hits_before = upstream_hits(fake_upstream, "/v1/chat/completions")
    first = ask(gateway, alice, model, "opening hours?")
    assert first.headers["x-beastmode-cache"] == "exact"
    assert first.headers["x-beastmode-cache-tier"] in ("L2", "L3")
    assert upstream_hits(fake_upstream, "/v1/chat/completions") == hits_before
    warming = RequestRecord.objects.get(is_warming=True, model=model)
    assert (warming.path, warming.outcome, warming.tokens_out) == ("/warming", "success", 5)
    prompt.refresh_from_db()
    assert prompt.last_result == "stored" and prompt.last_warmed_at is not None


def test_a_revoked_keys_warm_up_prompts_spend_nothing(
    gateway: Process, fake_upstream: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("")
    prompt = WarmupPrompt.objects.create(
        service_key_id=alice.key_id, model=model, messages=[{"role": "user", "content": "hi"}]
    )
    ServiceKey.objects.get(pk=alice.key_id).revoke()
    hits_before = upstream_hits(fake_upstream, "/v1/chat/completions")

    assert "key" in tasks.warm_prompt.apply(args=[prompt.id]).get()
    assert upstream_hits(fake_upstream, "/v1/chat/completions") == hits_before
    assert not CacheEntry.objects.filter(model=model).exists()


def test_warmcache_command_warms_every_enabled_prompt(
    gateway: Process, alice: Client, model_with: ModelFactory, settings: object
) -> None:
    model = model_with("")
    for text, enabled in (("one", True), ("two", True), ("off", False)):
        WarmupPrompt.objects.create(service_key_id=alice.key_id, model=model, enabled=enabled,
                                    messages=[{"role": "user", "content": text}])  # fmt: skip
    out = StringIO()
    settings.CELERY_TASK_ALWAYS_EAGER = True  # type: ignore[attr-defined]  # run them here
    call_command("warmcache", stdout=out)

    assert out.getvalue().count(": stored") == 2
    assert CacheEntry.objects.filter(model=model).count() == 2


@pytest.mark.parametrize("stream", [False, True])
def test_popular_answers_about_to_expire_are_refreshed_for_the_same_lifetime(
    gateway: Process, alice: Client, model_with: ModelFactory, stream: bool
) -> None:
    """Also answers first stored from a stream (refreshed without streaming), and a
    client's short ttl stays short."""
    model = model_with("")
    for _ in range(3):
        ask(gateway, alice, model, "popular question", cache={"ttl": 60}, stream=stream)
    entry = wait_until(lambda: CacheEntry.objects.filter(model=model).first())
    wait_until(lambda: RequestRecord.objects.filter(cache_entry_key=entry.key).count() == 3)
    old_expiry = entry.expires_at
    assert old_expiry < timezone.now() + timedelta(seconds=120)
    time.sleep(1)

    results = tasks.refresh_expiring.apply().get()

    assert results == {entry.key: "stored"}
    entry.refresh_from_db()
    assert entry.expires_at > old_expiry
    assert entry.expires_at - entry.created_at == timedelta(seconds=60)
    refreshed = RequestRecord.objects.get(is_warming=True, model=model)
    assert refreshed.outcome == "success" and not refreshed.stream


@pytest.mark.parametrize(
    ("messages", "parameters", "result"),
    [
        ("just a string", {}, "'messages' must be a non-empty array."),
        (
            [{"role": "wizard", "content": "hi"}],
            {},
            "Invalid value for 'messages[0].role': 'wizard'. Supported values are:",
        ),
        ([{"role": "user", "content": 5}], {}, "'messages[0].content' must be a string"),
        (HELLO, {"api_base": "http://evil.example"}, "The field 'api_base' is not accepted"),
        (
            HELLO,
            {"temperature": 7},
            "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got 7",
        ),
    ],
)
def test_an_invalid_warmup_prompt_is_not_sent_and_says_why(
    fake_upstream: Process,
    alice: Client,
    model_with: ModelFactory,
    messages: object,
    parameters: dict,
    result: str,
) -> None:
    model = model_with("")
    # Saved without the form's checks: from before them, or not through admin.
    prompt = WarmupPrompt.objects.create(
        service_key_id=alice.key_id, model=model, messages=messages, parameters=parameters
    )
    hits_before = upstream_hits(fake_upstream, "/v1/chat/completions")

    outcome = tasks.warm_prompt.apply(args=[prompt.id]).get()

    assert outcome.startswith("invalid, not sent: ") and result in outcome
    assert upstream_hits(fake_upstream, "/v1/chat/completions") == hits_before
    assert not CacheEntry.objects.filter(model=model).exists()
    prompt.refresh_from_db()
    assert prompt.last_result == outcome[:200]
