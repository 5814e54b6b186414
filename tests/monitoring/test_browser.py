"""/monitoring in a real browser: Debian's chromium driven by Playwright (no browser download;
`make test` installs the apt package). A screenshot is kept in test-artifacts/."""

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.personas import Client, ModelFactory, record_for
from tests.processes import ROOT, Process, http, server_env, start_gateway, stop_process

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = ROOT / "test-artifacts" / "monitoring.png"


@pytest.fixture(scope="module")
def gateway(django_db_setup: None) -> Iterator[Process]:
    """A gateway of this module's own (in-process channel layer, pushes every 0.3 s)."""
    env = {k: v for k, v in server_env().items() if k not in ("REDIS_URL", "CELERY_BROKER_URL")}
    process = start_gateway("browser", env)
    yield process
    stop_process(process)


def ask(gateway: Process, client: Client, model: str, question: str, status: int = 200) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": question}]}
    reply = http(f"{gateway.url}/v1/chat/completions", method="POST", key=client.key, body=body)
    assert reply.status == status, reply.body
    return reply.headers["x-request-id"]


def set_hidden(page: Page, hidden: bool) -> None:
    """As when the operator switches to another tab and back."""
    page.evaluate(
        """(hidden) => {
            Object.defineProperty(document, "hidden", {value: hidden, configurable: true});
            document.dispatchEvent(new Event("visibilitychange"));
        }""",
        hidden,
    )


def kpi(page: Page, name: str) -> str:
    return page.locator(f'[data-kpi="{name}"]').inner_text()


def test_an_operator_logs_in_and_watches_the_dashboard_update(
    gateway: Process,
    alice: Client,
    model_with: ModelFactory,
    django_user_model: type,
) -> None:
    assert CHROMIUM.exists(), "make test installs Debian's chromium (scripts/browser.sh)"
    django_user_model.objects.create_superuser("operator", "op@example.com", "a-long-password")
    model, broken = model_with(""), model_with("status/500")
    for question in ("first question", "second question", "first question"):
        record_for(ask(gateway, alice, model, question))  # written, so in the first paint
    for question in ("fails once", "fails twice"):
        record_for(ask(gateway, alice, broken, question, status=502))

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        try:
            page.goto(f"{gateway.url}/monitoring")  # → the admin login
            page.fill("#id_username", "operator")
            page.fill("#id_password", "a-long-password")
            page.click("input[type=submit]")
            page.wait_for_url(re.compile(r"/monitoring$"))

            # The first paint is the server's: current numbers before the socket connects.
            assert int(kpi(page, "requests")) >= 3
            assert kpi(page, "hits").startswith("1 /")  # the repeated question
            expect(page.locator("#status")).to_contain_text("live", timeout=10_000)

            # Two pushes arrive (every 0.3 s in tests), and a new request shows up in one.
            before = int(kpi(page, "requests"))
            page.wait_for_function("Number(document.getElementById('dashboard')"
                                   ".dataset.updates) >= 2", timeout=10_000)  # fmt: skip
            ask(gateway, alice, model, "a question asked while the page is open")
            page.wait_for_function(
                f"Number(document.querySelector('[data-kpi=requests]').textContent) > {before}",
                timeout=10_000,
            )

            # Every chart is drawn by plotly.js (served from our static files), with data.
            for chart in ("requests", "latency", "models", "tiers"):
                expect(page.locator(f"#chart-{chart} .main-svg").first).to_be_visible()
            expect(page.locator("#chart-requests .bars path").first).to_be_attached()
            expect(page.locator("#chart-models .xtick text")).to_contain_text([model])
            colours = page.evaluate(
                "document.getElementById('chart-requests')._fullData"
                ".map((trace) => (trace.line || trace.marker).color)"
            )
            assert len(set(colours)) == 4, f"requests, errors and hits told apart: {colours}"
            assert re.fullmatch(r"[\d.]+ / [\d.]+ / [\d.]+ ms", kpi(page, "latency"))

            # The same failure twice is one row of recent errors, with its count and tips.
            failure = page.locator("#errors tbody tr", has_text=broken)
            expect(failure).to_have_count(1)
            expect(failure).to_contain_text("×2 since")
            expect(failure.locator("li").first).to_be_visible()

            # Switching the window switches the stream: the next snapshot shown is 24h's.
            page.click("button[data-window='24h']")
            expect(page.locator("#dashboard")).to_have_attribute("data-window", "24h")
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)

            # A hidden tab closes its socket (the page idles) and reopens it when shown.
            set_hidden(page, True)
            expect(page.locator("#status")).to_have_text("disconnected")
            set_hidden(page, False)
            expect(page.locator("#status")).to_contain_text("live")
        finally:
            browser.close()
    assert SCREENSHOT.stat().st_size > 10_000
