"""Cache admin pages: namespaces shown by name, warm-up prompts checked like API requests."""

import html

import pytest
from django.test import Client as BrowserClient
from django.utils import timezone

from cache.models import CacheEntry, CacheNamespace
from gateway.models import WarmupPrompt
from routing.models import Route
from routing.service_keys import create_service_key


def test_entries_show_the_name_of_their_shared_or_own_namespace(
    admin_browser: BrowserClient,
) -> None:
    team = CacheNamespace.objects.create(name="search-team")
    key, _ = create_service_key("carol-indexer")
    now = timezone.now()
    for entry_key, namespace in (("a", f"ns:{team.pk}"), ("b", f"key:{key.key_hash[:16]}")):
        CacheEntry.objects.create(
            key=entry_key, namespace=namespace, model="m", partition="p", prompt_text="x",
            response={}, created_at=now, expires_at=now,
        )  # fmt: skip

    entries = admin_browser.get("/admin/cache/cacheentry/").content.decode()
    namespaces = admin_browser.get("/admin/cache/cachenamespace/").content.decode()

    assert f"ns:{team.pk} (search-team)" in entries
    assert f"key:{key.key_hash[:16]} (carol-indexer)" in entries
    assert f"ns:{team.pk}" in namespaces


def add_warmup_prompt(browser: BrowserClient, **fields: str) -> str:
    form = {
        "model": "warm-model", "messages": '[{"role": "user", "content": "Opening hours?"}]',
        "parameters": "{}", "enabled": "on", **fields,
    }  # fmt: skip
    response = browser.post("/admin/gateway/warmupprompt/add/", form, follow=True)
    assert response.status_code == 200
    return html.unescape(response.content.decode())


@pytest.fixture
def warm_model(transactional_db: None) -> str:
    """A model warm-up prompts may name (never called here)."""
    Route.objects.create(model_name="warm-model")
    return "warm-model"


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"messages": '"just a string"'}, "'messages' must be a non-empty array."),
        (
            {"messages": '[{"role": "wizard", "content": "hi"}]'},
            "Invalid value for 'messages[0].role'",
        ),
        ({"messages": '[{"role": "user", "content": 5}]'}, "'messages[0].content' must be a"),
        ({"messages": '[{"role": "user", "content": []}]'}, "'messages[0].content' must be a"),
        ({"parameters": '{"api_base": "http://evil.example"}'}, "'api_base' is not accepted"),
        ({"parameters": '{"temperature": 7}'}, "Invalid 'temperature': decimal above maximum"),
        ({"parameters": '{"stream": true}'}, "'stream' is not a warm-up parameter"),
        ({"parameters": '["temperature", 0]'}, "'parameters' must be an object"),
        ({"model": "no-such-model"}, "There is no model 'no-such-model'"),
        ({"service_key": "restricted"}, "may not use the model 'warm-model'"),
    ],
)
def test_warmup_prompts_are_checked_like_api_requests_on_the_form(
    admin_browser: BrowserClient, warm_model: str, fields: dict[str, str], error: str
) -> None:
    open_key, _ = create_service_key("warmer")
    restricted, _ = create_service_key("restricted", allowed_models=["other"])
    keys = {"warmer": open_key.pk, "restricted": restricted.pk}
    service_key = str(keys[fields.pop("service_key", "warmer")])

    page = add_warmup_prompt(admin_browser, service_key=service_key, **fields)

    assert error in page
    assert not WarmupPrompt.objects.exists()


def test_a_valid_warmup_prompt_is_saved(admin_browser: BrowserClient, warm_model: str) -> None:
    key, _ = create_service_key("warmer")

    add_warmup_prompt(admin_browser, service_key=str(key.pk), parameters='{"temperature": 0}')

    assert WarmupPrompt.objects.get().parameters == {"temperature": 0}
