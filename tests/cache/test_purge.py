"""Purging from admin reaches every tier of every process; pruning drops expired rows."""

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client as BrowserClient
from django.utils import timezone

from cache import keys, purge, tasks
from cache.models import CacheEntry
from routing.models import ServiceKey
from tests.cache.test_exact_cache import ask, stored
from tests.personas import Client, ModelFactory, record_for, wait_for_model
from tests.processes import Process, server_env, start_gateway, stop_process, wait_until

pytestmark = pytest.mark.embedded

QUESTION = "What is the capital city of France?"
PARAPHRASE = "What's the capital of France?"
SLOW_L3_WRITE_S = 2.0


@pytest.fixture(scope="module")
def slow_writer(django_db_setup: None, django_db_blocker: Any) -> Iterator[Process]:
    """A second gateway whose answers wait 2 s for L3 (production waits 4 s): long enough
    to purge them on their way."""
    env = {**server_env(), "BEASTMODE_CACHE_L3_WRITE_INTERVAL_S": str(SLOW_L3_WRITE_S)}
    process = start_gateway("slow-writer", env)
    yield process
    stop_process(process)


def is_miss(gateway: Process, client: Client, model: str, text: str) -> bool:
    reply = ask(gateway, client, model, text, cache={"no-store": True})
    return reply.headers["x-beastmode-cache"] == "miss"


@pytest.mark.parametrize("scope", ["model", "namespace", "key"])
def test_a_purge_holds_for_answers_still_on_their_way_to_l3(
    gateway: Process, slow_writer: Process, alice: Client, model_with: ModelFactory, scope: str
) -> None:
    """Before, a purge deleted only what L3 held: an answer of the last seconds stayed in
    L2 and the index, then reached L3 after the purge, and was served again everywhere."""
    model = model_with("", semantic="on")
    wait_for_model(slow_writer, alice, model)
    first = ask(slow_writer, alice, model, QUESTION)
    assert first.headers["x-beastmode-cache"] == "miss"
    wait_until(lambda: ask(slow_writer, alice, model, PARAPHRASE, cache={"no-store": True})
               .headers["x-beastmode-cache"] == "semantic")  # fmt: skip
    assert stored(model) == 0, "still on its way to L3"
    key_hash = ServiceKey.objects.get(pk=alice.key_id).key_hash
    namespace = keys.namespace_for(key_hash_prefix=key_hash[:16], shared_namespace_id=None)
    entry_key = record_for(first.headers["x-request-id"]).cache_entry_key
    purged_at = time.monotonic()

    purge.purge(**{scope: {"model": model, "namespace": namespace, "key": entry_key}[scope]})

    for process in (slow_writer, gateway):
        wait_until(lambda p=process: is_miss(p, alice, model, QUESTION))  # type: ignore[misc]
    while time.monotonic() < purged_at + 2 * SLOW_L3_WRITE_S:  # past the writer's L3 write
        for process in (slow_writer, gateway):
            assert is_miss(process, alice, model, QUESTION)
            assert is_miss(process, alice, model, PARAPHRASE)
        time.sleep(0.2)
    assert stored(model) == 0


def test_deleting_entries_in_admin_purges_them_from_every_tier(
    gateway: Process, alice: Client, model_with: ModelFactory, admin_browser: BrowserClient
) -> None:
    """Admin's own "Delete selected" deleted the L3 rows only: L1 and L2 kept serving."""
    model = model_with("")
    ask(gateway, alice, model, "delete me")
    wait_until(lambda: stored(model) == 1)
    assert ask(gateway, alice, model, "delete me").headers["x-beastmode-cache"] == "exact"

    entry = CacheEntry.objects.get(model=model)
    admin_browser.post(
        "/admin/cache/cacheentry/",
        {"action": "delete_selected", "_selected_action": [entry.id], "post": "yes"},
    )

    assert stored(model) == 0
    wait_until(lambda: is_miss(gateway, alice, model, "delete me"))


def test_purging_a_model_in_admin_evicts_it_from_the_running_gateway(
    gateway: Process, alice: Client, model_with: ModelFactory, admin_browser: BrowserClient
) -> None:
    model, other = model_with(""), model_with("")
    ask(gateway, alice, model, "purge me")
    ask(gateway, alice, other, "keep me")
    assert ask(gateway, alice, model, "purge me").headers["x-beastmode-cache"] == "exact"
    wait_until(lambda: stored(model) == 1 and stored(other) == 1)

    entry = CacheEntry.objects.get(model=model)
    response = admin_browser.post(
        "/admin/cache/cacheentry/",
        {"action": "purge_models", "_selected_action": [entry.id]},
        follow=True,
    )
    assert "Purged 1 entries of" in response.content.decode()

    assert stored(model) == 0 and stored(other) == 1
    wait_until(lambda: ask(gateway, alice, model, "purge me", cache={"no-store": True})
               .headers["x-beastmode-cache"] == "miss")  # fmt: skip
    assert ask(gateway, alice, other, "keep me").headers["x-beastmode-cache"] == "exact"


def test_the_prune_task_deletes_only_expired_rows(transactional_db: None) -> None:
    now = timezone.now()
    for key, expires_at in (("old", now - timedelta(seconds=1)), ("new", now + timedelta(hours=1))):
        CacheEntry.objects.create(
            key=key, namespace="key:1", model="m", partition="p", prompt_text="x",
            response={}, created_at=now, expires_at=expires_at,
        )  # fmt: skip
    assert tasks.prune_expired.apply().get() == 1
    assert list(CacheEntry.objects.values_list("key", flat=True)) == ["new"]
