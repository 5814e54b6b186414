"""Purging from admin reaches every tier of every process; pruning drops expired rows."""

from datetime import timedelta

from django.test import Client as BrowserClient
from django.utils import timezone

from cache import tasks
from cache.models import CacheEntry
from tests.cache.test_exact_cache import ask, stored
from tests.conftest import Client, ModelFactory, Process, wait_until


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
