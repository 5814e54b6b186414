"""Cache admin pages: namespaces shown by name, warm-up prompts checked like API requests."""

import html
import re
from array import array

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
        # (picked from a select of the routes; one removed meanwhile is refused)
        ({"model": "no-such-model"}, "no-such-model is not one of the available choices"),
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


def test_an_entry_shows_a_short_escaped_prompt_and_sums_up_its_embedding(
    admin_browser: BrowserClient,
) -> None:
    now = timezone.now()
    vector = array("f", [3.0, 4.0] + [0.0] * 382)  # norm 5
    entry = CacheEntry.objects.create(
        key="e" * 64, namespace="key:0123456789abcdef", model="m", partition="p",
        prompt_text="<script>alert(1)</script> opening hours " * 5, response={},
        embedding=vector.tobytes(), created_at=now, expires_at=now,
    )  # fmt: skip

    listing = admin_browser.get("/admin/cache/cacheentry/").content.decode()
    detail = admin_browser.get(f"/admin/cache/cacheentry/{entry.pk}/change/").content.decode()

    preview = re.search(r'<td class="field-prompt_preview">(.*?)</td>', listing)
    assert preview and preview[1].startswith("&lt;script&gt;alert(1)&lt;/script&gt; opening")
    assert len(html.unescape(preview[1])) <= 60 and preview[1].endswith("…")
    assert "384 dimensions (float32), norm 5.000" in detail
    assert "\\x00" not in detail and "&lt;memory at" not in detail


def test_a_new_warmup_prompt_starts_empty_and_picks_its_model_from_the_routes(
    admin_browser: BrowserClient, warm_model: str
) -> None:
    Route.objects.create(model_name="another-model")

    page = admin_browser.get("/admin/gateway/warmupprompt/add/").content.decode()

    messages = re.search(r'<textarea name="messages"[^>]*>(.*?)</textarea>', page, re.S)
    assert messages and messages[1].strip() == ""  # not `null`
    model = re.search(r'<select name="model"[^>]*>(.*?)</select>', page, re.S)
    assert model, "the model is chosen, not typed"
    options = re.findall(r'<option value="([^"]*)"', model[1])
    assert options == ["", "another-model", "warm-model"]
