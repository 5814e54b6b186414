"""Admin pages in a real browser (Debian's chromium via Playwright, launched as in
tests/monitoring/test_browser.py): lists fit 1400 px with their key columns in view, the
header leads to the dashboard, the warm-up form starts sensibly, a failed test connection
reads as an error. Screenshots at 1400x900 and 390x844 are kept in test-artifacts/admin-*.png."""

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from django.utils import timezone
from playwright.sync_api import Browser, Page, expect, sync_playwright

from cache.models import CacheEntry
from monitoring.models import RequestRecord
from routing.service_keys import create_service_key
from tests.personas import make_endpoint, make_model
from tests.processes import ROOT, Process

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
WIDE = {"width": 1400, "height": 900}
PHONE = {"width": 390, "height": 844}


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """Started inside a test, once its rows are made: Playwright's sync API runs an event
    loop in this thread, where Django refuses ORM calls (fixtures' included)."""
    assert CHROMIUM.exists(), "make test installs Debian's chromium (scripts/browser.sh)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def operator(transactional_db: None, django_user_model: type) -> tuple[str, str]:
    """An operator with an admin login (logs in through the form, as people do)."""
    django_user_model.objects.create_superuser("operator", "op@example.com", "a-long-password")
    return "operator", "a-long-password"


def logged_in_page(
    browser: Browser, gateway: Process, operator: tuple[str, str], viewport: dict[str, int]
) -> Page:
    page = browser.new_page(viewport=viewport)  # type: ignore[arg-type]
    page.goto(f"{gateway.url}/admin/login/?next=/admin/")
    page.fill("#id_username", operator[0])
    page.fill("#id_password", operator[1])
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r"/admin/$"))
    return page


def shoot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    width = page.viewport_size["width"] if page.viewport_size else 0
    page.screenshot(path=str(ARTIFACTS / f"admin-{name}-{width}.png"), full_page=True)


@pytest.fixture
def busy_gateway(transactional_db: None, fake_upstream: Process) -> None:
    """What an operator looks at after a day: long names, every kind of record, a cached
    answer with its embedding, an endpoint that does not answer."""
    ok = make_endpoint("openai-gpt-4o-mini-eu-west", "https://api.openai.example.com/v1",
                       upstream_model="gpt-4o-mini-2024-07-18")  # fmt: skip
    broken = make_endpoint("support-primary", f"{fake_upstream.url}/status/503/v1",
                           upstream_model="vendor-model-id-7")  # fmt: skip
    make_model("support-bot", [broken, ok])
    make_model("summarizer-long-context", [ok])
    create_service_key("checkout-service-production")
    now = timezone.now()
    for n, (outcome, status, cache, tier, error) in enumerate([
        ("success", 200, "miss", "", ""),
        ("success", 200, "exact", "L1", ""),
        ("success", 200, "semantic", "L2", ""),
        ("upstream_error", 502, "miss", "", "upstream_server_error"),
        ("auth_error", 401, "", "", "invalid_api_key"),
    ]):  # fmt: skip
        RequestRecord.objects.create(
            request_id=f"req_{n:032x}", created_at=now, path="/v1/chat/completions",
            service_key_name="checkout-service-production", model="summarizer-long-context",
            endpoint="openai-gpt-4o-mini-eu-west", outcome=outcome, status_code=status,
            latency_ms=1234.5, cache_outcome=cache, cache_tier=tier, error_class=error,
        )  # fmt: skip
    vector = np.linspace(-1, 1, 384, dtype=np.float32)
    CacheEntry.objects.create(
        key="k" * 64, namespace="key:0123456789abcdef", model="support-bot", partition="p",
        prompt_text="<b>What are your opening hours</b> on public holidays in December? " * 3,
        response={}, embedding=vector.tobytes(), created_at=now, expires_at=now,
    )  # fmt: skip


LISTS = {
    "records": ("/admin/monitoring/requestrecord/",
                ["when", "outcome", "status", "latency", "cache", "tier", "model"]),
    "endpoints": ("/admin/routing/modelendpoint/", ["name", "circuit", "last_probe", "enabled"]),
    "cache": ("/admin/cache/cacheentry/", ["prompt_preview", "model", "hits"]),
}  # fmt: skip


@pytest.mark.parametrize("name", list(LISTS))
def test_admin_lists_show_their_key_columns_within_1400px(
    gateway: Process, operator: tuple[str, str], busy_gateway: None, name: str
) -> None:
    url, columns = LISTS[name]
    with chromium() as browser:
        _check_list(browser, gateway, operator, name, url, columns)


def _check_list(
    browser: Browser, gateway: Process, operator: tuple[str, str], name: str, url: str,
    columns: list[str],
) -> None:  # fmt: skip
    for viewport in (WIDE, PHONE):
        page = logged_in_page(browser, gateway, operator, viewport)
        try:
            page.goto(f"{gateway.url}{url}")
            shoot(page, name)
            if viewport is WIDE:
                assert page.evaluate("document.documentElement.scrollWidth") <= WIDE["width"]
                # Django scrolls a wide table inside its box: the columns must be in view there.
                results = page.locator("#changelist .results").bounding_box()
                assert results is not None
                right_edge = min(WIDE["width"], results["x"] + results["width"])
                for column in columns:
                    box = page.locator(f"th.column-{column}").bounding_box(timeout=5000)
                    assert box is not None, column
                    assert box["x"] >= 0 and box["x"] + box["width"] <= right_edge, column
        finally:
            page.close()


def test_the_admin_header_leads_to_the_dashboard(
    gateway: Process, operator: tuple[str, str]
) -> None:
    with chromium() as browser:
        for viewport in (WIDE, PHONE):
            page = logged_in_page(browser, gateway, operator, viewport)
            try:
                shoot(page, "index")
                page.get_by_role("link", name="Dashboard").click()
                page.wait_for_url(re.compile(r"/monitoring$"))
                expect(page.locator("#dashboard")).to_be_attached()
            finally:
                page.close()


def test_a_warmup_prompt_is_written_from_an_empty_form_and_a_list_of_models(
    gateway: Process, operator: tuple[str, str], busy_gateway: None
) -> None:
    with chromium() as browser:
        for viewport in (PHONE, WIDE):
            page = logged_in_page(browser, gateway, operator, viewport)
            try:
                page.goto(f"{gateway.url}/admin/gateway/warmupprompt/add/")
                shoot(page, "warmup-form")
                expect(page.locator("#id_messages")).to_have_value("")
                expect(page.locator("#id_messages")).to_have_attribute(
                    "placeholder", re.compile("role")
                )
                options = page.locator("#id_model option").all_inner_texts()
                assert options == ["---------", "summarizer-long-context", "support-bot"]
            finally:
                page.close()
        page = logged_in_page(browser, gateway, operator, WIDE)
        page.goto(f"{gateway.url}/admin/gateway/warmupprompt/add/")
        key = page.locator("#id_service_key option", has_text="checkout-service-production")
        page.select_option("#id_service_key", key.get_attribute("value"))
        page.select_option("#id_model", "support-bot")
        page.fill("#id_messages", '[{"role": "user", "content": "Opening hours?"}]')
        page.click("input[name=_save]")
        expect(page.locator("ul.messagelist li.success")).to_be_visible()
        expect(page.locator("#result_list")).to_contain_text("support-bot")


def test_a_failed_test_connection_reads_as_an_error_with_its_tips(
    gateway: Process, operator: tuple[str, str], busy_gateway: None
) -> None:
    with chromium() as browser:
        page = logged_in_page(browser, gateway, operator, WIDE)
        page.goto(f"{gateway.url}/admin/routing/modelendpoint/")
        page.locator("tr", has_text="support-primary").locator("input.action-select").check()
        page.select_option("select[name=action]", "test_connection")
        page.click("button[name=index]")
        error = page.locator("ul.messagelist li.error")
        expect(error).to_contain_text("Endpoint 'support-primary' of model 'support-bot' failed")
        expect(error.locator("ul li").first).to_be_visible()
        assert error.locator("ul li").count() >= 2 and "<li>" not in error.inner_text()
        red, green, blue = map(int, re.findall(r"\d+", error.evaluate(
            "(li) => getComputedStyle(li).backgroundColor")))  # fmt: skip
        assert red > green and red > blue, "the admin's error colour"
        tip_style = error.locator("ul li").first.evaluate(
            "(li) => [getComputedStyle(li).backgroundImage, getComputedStyle(li).display]"
        )
        assert tip_style == ["none", "list-item"], "tips are a list, not more (green) messages"
        shoot(page, "test-connection")
        page.set_viewport_size(PHONE)
        shoot(page, "test-connection")


def test_a_cache_entry_page_sums_up_its_embedding(
    gateway: Process, operator: tuple[str, str], busy_gateway: None
) -> None:
    entry_id = CacheEntry.objects.get().pk
    with chromium() as browser:
        page = logged_in_page(browser, gateway, operator, WIDE)
        page.goto(f"{gateway.url}/admin/cache/cacheentry/{entry_id}/change/")
        expect(page.locator(".field-embedding_summary")).to_contain_text("384 dimensions")
        assert "\\x00" not in page.content()
        shoot(page, "cache-entry")
