"""Admin workflows: test connection with the live diagnosis, service keys shown once, revoke."""

import re
from datetime import timedelta

import pytest
from django.test import Client as BrowserClient
from django.utils import timezone

from routing.models import KeySpend, ModelEndpoint, Route, ServiceKey
from routing.service_keys import create_service_key, hash_key
from tests.personas import make_endpoint, make_model
from tests.processes import Process, free_port


def run_action(browser: BrowserClient, url: str, action: str, ids: list[int]) -> str:
    response = browser.post(url, {"action": action, "_selected_action": ids}, follow=True)
    assert response.status_code == 200
    return response.content.decode()


def test_test_connection_reports_success_and_the_same_diagnosis_a_request_would_get(
    admin_browser: BrowserClient, fake_upstream: Process
) -> None:
    good = make_endpoint("good", f"{fake_upstream.url}/v1")
    no_v1 = make_endpoint("no-v1", fake_upstream.url)  # the classic: /v1 missing
    refused = make_endpoint("refused", f"http://127.0.0.1:{free_port()}/v1")

    page = run_action(admin_browser, "/admin/routing/modelendpoint/", "test_connection",
                      [good.id, no_v1.id, refused.id])  # fmt: skip

    assert "Endpoint &#x27;good&#x27;: OK, answered in" in page
    assert "Endpoint &#x27;no-v1&#x27; failed (upstream_not_found)" in page
    assert "end in /v1" in page
    assert "Endpoint &#x27;refused&#x27; failed (connection_refused)" in page
    assert "Check that the upstream server is running" in page
    assert ModelEndpoint.objects.get(name="no-v1").probe.error_class == "upstream_not_found"
    assert ModelEndpoint.objects.get(name="good").probe.ok


def test_test_connection_names_the_model_clients_use_and_shows_failures_as_errors(
    admin_browser: BrowserClient, fake_upstream: Process
) -> None:
    broken = make_endpoint("broken", f"{fake_upstream.url}/status/503/v1",
                           upstream_model="vendor-model-id-7")  # fmt: skip
    make_model("support-bot", [broken])

    page = run_action(admin_browser, "/admin/routing/modelendpoint/", "test_connection",
                      [broken.id])  # fmt: skip

    error = re.search(r'<li class="error">(.*?)</li>\s*</ul>\s*</li>', page, re.S)
    assert error, page
    assert "Endpoint &#x27;broken&#x27; of model &#x27;support-bot&#x27; failed" in error[1]
    assert "Model &#x27;support-bot&#x27;: endpoint" in error[1]
    assert "vendor-model-id-7" not in error[1]
    assert error[1].count("<li>") >= 2  # the tips, as a list


def test_a_new_service_key_is_shown_once_and_stored_hashed(admin_browser: BrowserClient) -> None:
    response = admin_browser.post(
        "/admin/routing/servicekey/add/",
        {
            "name": "billing",
            "allowed_models": "demo, gpt-4o",
            "expires_at_0": "",
            "expires_at_1": "",
            "budget_period": "monthly",  # as the form shows them
            "model_limits": "{}",
        },
        follow=True,
    )
    page = response.content.decode()
    key = ServiceKey.objects.get(name="billing")
    raw = page.split("it is not shown again: ")[1].split("<")[0].strip()

    assert raw.startswith("bm-") and raw.startswith(key.prefix)
    assert key.key_hash == hash_key(raw) and raw not in key.key_hash
    assert key.allowed_models == ["demo", "gpt-4o"]
    change = admin_browser.get(f"/admin/routing/servicekey/{key.id}/change/").content.decode()
    assert raw not in change


def test_revoking_a_key_from_admin_marks_it_revoked(admin_browser: BrowserClient) -> None:
    key, _ = create_service_key("leaky")
    run_action(admin_browser, "/admin/routing/servicekey/", "revoke", [key.id])
    key.refresh_from_db()
    assert key.revoked_at is not None


def add_route(browser: BrowserClient, **fields: str) -> str:
    form = {
        "model_name": "guarded", "description": "", "enabled": "on", "cache_enabled": "on",
        "semantic_mode": "on", "semantic_threshold": "0.95", "cache_ttl_s": "",
        "chain-TOTAL_FORMS": "0", "chain-INITIAL_FORMS": "0",
        "chain-MIN_NUM_FORMS": "0", "chain-MAX_NUM_FORMS": "1000",
        **fields,
    }  # fmt: skip
    response = browser.post("/admin/routing/route/add/", form, follow=True)
    assert response.status_code == 200
    return response.content.decode()


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("semantic_threshold", "0", "greater than or equal to 0.8"),
        ("semantic_threshold", "-1", "greater than or equal to 0.8"),
        ("semantic_threshold", "0.5", "greater than or equal to 0.8"),
        ("semantic_threshold", "1.5", "less than or equal to 1.0"),
        ("semantic_threshold", "2", "less than or equal to 1.0"),
        ("cache_ttl_s", "0", "greater than or equal to 1"),
        ("cache_ttl_s", "31536001", "less than or equal to 31536000"),
    ],
)
def test_route_cache_settings_out_of_range_are_refused_on_the_form(
    admin_browser: BrowserClient, field: str, value: str, error: str
) -> None:
    page = add_route(admin_browser, **{field: value})

    assert error in page
    assert not Route.objects.exists()


def test_route_cache_settings_in_range_are_saved(admin_browser: BrowserClient) -> None:
    add_route(admin_browser, semantic_threshold="0.8", cache_ttl_s="31536000")

    route = Route.objects.get(model_name="guarded")
    assert (route.semantic_threshold, route.cache_ttl_s) == (0.8, 31536000)


def add_endpoint(browser: BrowserClient, name: str, base_url: str) -> str:
    form = {
        "name": name, "provider": "openai", "base_url": base_url, "upstream_model": "m",
        "api_key": "", "connect_timeout_s": 5, "first_byte_timeout_s": 30,
        "total_timeout_s": 60, "max_retries": 1, "input_cost_per_1m": 0,
        "output_cost_per_1m": 0, "enabled": "on",
    }  # fmt: skip
    return browser.post("/admin/routing/modelendpoint/add/", form, follow=True).content.decode()


@pytest.mark.parametrize(
    "base_url", ["http://vllm:8000/v1", "https://api.openai.com/v1", "http://127.0.0.1:9/v1"]
)
def test_an_endpoint_may_be_a_container_name_or_any_http_host(
    admin_browser: BrowserClient, base_url: str
) -> None:
    page = add_endpoint(admin_browser, "upstream", base_url)

    assert "was added successfully" in page
    assert ModelEndpoint.objects.get(name="upstream").base_url == base_url


@pytest.mark.parametrize(
    "base_url", ["api.openai.com/v1", "ftp://files.example/v1", "http://", "http://host:99999/v1"]
)
def test_an_endpoint_url_must_be_http_with_a_host(
    admin_browser: BrowserClient, base_url: str
) -> None:
    page = add_endpoint(admin_browser, "upstream", base_url)

    assert "Enter an http:// or https:// URL" in page
    assert not ModelEndpoint.objects.filter(name="upstream").exists()


def test_the_key_list_shows_each_keys_spend_in_its_own_period_and_what_is_left(
    admin_browser: BrowserClient,
) -> None:
    today = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    daily, _ = create_service_key("daily-key", budget_usd="2", budget_period="daily", rpm=60)
    total, _ = create_service_key("total-key", budget_usd="10", budget_period="total")
    for key, days_ago, usd in ((daily, 0, 1.5), (daily, 1, 9), (total, 40, 4)):
        day = today - timedelta(days=days_ago)
        KeySpend.objects.update_or_create(  # (see test_jobs: a row written late, reused id)
            service_key_id=key.id, bucket_s=86400, bucket_start=day, defaults={"cost_usd": usd}
        )

    page = admin_browser.get("/admin/routing/servicekey/").content.decode()
    rows = {
        name: page.split(name, 1)[1].split("</tr>", 1)[0] for name in ("daily-key", "total-key")
    }
    assert "$1.50 (daily)" in rows["daily-key"] and "$0.50 of $2.00 (25%)" in rows["daily-key"]
    assert "60 rpm" in rows["daily-key"]
    assert "$4.00 (total)" in rows["total-key"] and "$6.00 of $10.00 (60%)" in rows["total-key"]
