"""/monitoring in a real browser: Debian's chromium driven by Playwright (no browser download;
`make test` installs the apt package). Screenshots are kept in test-artifacts/: a wall
screen (1400x900) and phones (390x844, 360x780), with answers, failures, rejected requests
and an open circuit on the page."""

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from monitoring.models import RequestRecord
from tests.personas import Client, ModelFactory, make_client, record_for, wait_for_key
from tests.processes import (
    ROOT,
    Process,
    http,
    server_env,
    start_gateway,
    stop_process,
    wait_until,
)

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = ROOT / "test-artifacts" / "monitoring.png"
# Pushes come every 0.3 s, but a suite loading both cores can take seconds per tick.
PUSH_WAIT_MS = 30_000


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
            assert kpi(page, "exact_hits") == "1"  # the repeated question
            expect(page.locator("#status")).to_contain_text("live", timeout=PUSH_WAIT_MS)

            # Two pushes arrive (every 0.3 s in tests), and a new request shows up in one.
            before = int(kpi(page, "requests"))
            page.wait_for_function("Number(document.getElementById('dashboard')"
                                   ".dataset.updates) >= 2", timeout=PUSH_WAIT_MS)  # fmt: skip
            ask(gateway, alice, model, "a question asked while the page is open")
            page.wait_for_function(
                f"Number(document.querySelector('[data-kpi=requests]').textContent) > {before}",
                timeout=PUSH_WAIT_MS,
            )

            # Every chart is drawn by plotly.js (served from our static files), with data.
            for chart in ("requests", "latency", "models", "tiers"):
                expect(page.locator(f"#chart-{chart} .main-svg").first).to_be_visible()
            expect(page.locator("#chart-requests .bars path").first).to_be_attached()
            expect(page.locator("#chart-models .ytick text")).to_contain_text([model])
            colours = page.evaluate(
                "document.getElementById('chart-requests')._fullData"
                ".map((trace) => (trace.line || trace.marker).color)"
            )
            assert len(set(colours)) == 5, f"answers, failures, rejections, hits: {colours}"
            assert re.fullmatch(r"[\d.]+ / [\d.]+ / [\d.]+ ms", kpi(page, "latency"))

            # The same failure twice is one row of recent errors, with its count and tips.
            failure = page.locator("#errors tbody tr", has_text=broken)
            expect(failure).to_have_count(1)
            expect(failure).to_contain_text("×2")
            expect(failure.locator("li").first).to_be_visible()

            # Switching the window switches the stream (the next snapshot shown is 24h's) and
            # the URL, so a reload shows the same window.
            page.click("button[data-window='24h']")
            expect(page.locator("#dashboard")).to_have_attribute("data-window", "24h")
            expect(page).to_have_url(re.compile(r"/monitoring\?window=24h$"))
            page.reload()
            expect(page.locator(".windows button.active[data-window='24h']")).to_have_count(1)
            expect(page.locator("#dashboard")).to_have_attribute("data-window", "24h")
            expect(page.locator("#status")).to_contain_text("live", timeout=PUSH_WAIT_MS)
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


def call(gateway: Process, key: str, model: str, question: str) -> int:
    """One chat request, whatever becomes of it: its status."""
    body = {"model": model, "messages": [{"role": "user", "content": question}]}
    return http(f"{gateway.url}/v1/chat/completions", method="POST", key=key, body=body).status


def log_in(page: Page, gateway: Process) -> list[str]:
    """Log the operator in; returns the list the page's script errors will be added to."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{gateway.url}/monitoring")  # → the admin login
    page.fill("#id_username", "operator")
    page.fill("#id_password", "a-long-password")
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r"/monitoring$"))
    return errors


# (width, height, touch): a wall screen, a phone, the narrowest phone we support.
VIEWPORTS = [(1400, 900, False), (390, 844, True), (360, 780, True)]


def test_the_dashboard_reads_right_on_a_wall_screen_and_on_phones(
    gateway: Process,
    alice: Client,
    model_with: ModelFactory,
    django_user_model: type,
) -> None:
    django_user_model.objects.create_superuser("operator", "op@example.com", "a-long-password")
    model, broken = model_with(""), model_with("status/500")
    statuses = [call(gateway, alice.key, model, f"question {n}") for n in range(6)]
    # The broken model fails until its circuit opens (3 failures in tests), then fails fast.
    statuses += [call(gateway, alice.key, broken, f"fails {n}") for n in range(6)]
    statuses += [call(gateway, "sk-wrong-key", model, "who am I"),
                 call(gateway, alice.key, "no-such-model", "anyone there?")]  # fmt: skip
    assert statuses == [200] * 6 + [502] * 3 + [503] * 3 + [401, 404]
    team = wait_for_key(gateway, make_client("team-on-a-budget", budget_usd="0.000001"))
    assert call(gateway, team.key, model, "spend it all") == 200  # costs more than that
    wait_until(lambda: RequestRecord.objects.count() >= len(statuses) + 1)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            for width, height, touch in VIEWPORTS:
                context = browser.new_context(viewport={"width": width, "height": height},
                                              has_touch=touch, is_mobile=touch)  # fmt: skip
                page = context.new_page()
                errors = log_in(page, gateway)
                expect(page.locator("#status")).to_contain_text("live", timeout=PUSH_WAIT_MS)
                page.wait_for_function("Number(document.getElementById('dashboard')"
                                       ".dataset.updates) >= 1", timeout=PUSH_WAIT_MS)  # fmt: skip
                assert_reads_right(page, width, touch, broken)
                assert errors == []
                page.mouse.move(0, 0)  # (no hover label in the screenshot)
                screenshot = ROOT / "test-artifacts" / f"monitoring-{width}.png"
                screenshot.parent.mkdir(exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=True)
                assert screenshot.stat().st_size > 10_000
                context.close()
        finally:
            browser.close()


def assert_reads_right(page: Page, width: int, touch: bool, broken: str) -> None:
    # Nothing scrolls sideways, nothing runs off the edge.
    assert page.evaluate("document.scrollingElement.scrollWidth <= innerWidth"), width
    overflowing = page.evaluate(
        """[...document.querySelectorAll('main *')]
            .filter((el) => el.getBoundingClientRect().right > innerWidth + 0.5)
            .map((el) => el.tagName + '#' + el.id + '.' + el.className)"""
    )
    assert overflowing == [], (width, overflowing)
    # Every tile's figure fits its tile on one line (P50 / P95 / P99 included).
    figures = page.locator(".kpi .value")
    for n in range(figures.count()):
        fits = figures.nth(n).evaluate(
            "(el) => el.scrollWidth <= el.clientWidth && el.getClientRects().length === 1"
            " && el.offsetHeight < 2 * parseFloat(getComputedStyle(el).fontSize)"
        )
        assert fits, (width, figures.nth(n).inner_text())

    # Failures and rejections are told apart, both on the page and explained there.
    failed = page.locator(".kpi", has=page.locator('[data-kpi="error_rate"]'))
    rejected = page.locator(".kpi", has=page.locator('[data-kpi="rejected_rate"]'))
    for tile, count in ((failed, "errors"), (rejected, "rejected")):
        expect(tile).to_be_visible()
        assert tile.get_attribute("title"), "a tile explains itself on hover"
        assert int(kpi(page, count)) >= 2
    coverage = page.locator(".kpi", has=page.locator('[data-kpi="coverage"]'))
    assert "written" in (coverage.get_attribute("title") or "")
    expect(coverage.locator(".hint")).to_contain_text("records written")
    # Costs keep their significant digits ($0.000123, not $0.0001).
    assert re.fullmatch(r"\$(0\.0*[1-9]\d{0,2}|[1-9][\d,]*(\.\d\d)?|0)", kpi(page, "cost_usd"))

    # Chart titles are captions: the modebar is gone on touch screens and never covers one.
    captions = page.locator(".chart figcaption")
    expect(captions).to_have_count(4)
    page.hover("#chart-requests .nsewdrag")
    modebars = page.locator("#chart-requests .modebar-container .modebar")
    if touch:
        expect(modebars).to_have_count(0)
    else:
        bar, title = modebars.first.bounding_box(), captions.first.bounding_box()
        assert bar and title and bar["y"] >= title["y"] + title["height"], (bar, title)

    # The charts span the traffic (a few minutes old here), not an empty hour; latency
    # is drawn as lines through buckets without requests.
    axis_age_ms = page.evaluate(  # (the axis is in local time, a string without a zone)
        "Date.now() - new Date(document.getElementById('chart-requests')"
        "._fullLayout.xaxis.range[0]).getTime()"
    )
    assert 0 < axis_age_ms < 10 * 60_000
    gaps = page.evaluate(
        "document.getElementById('chart-latency')._fullData.map((trace) => trace.connectgaps)"
    )
    assert gaps == [True, True, True]

    # The upstream error behind the open circuit is on the page, next to the circuit's.
    for error_class in ("circuit_open", "upstream_server_error"):
        rows = page.locator("#errors tbody tr", has_text=broken).filter(has_text=error_class)
        expect(rows).to_have_count(1)
    expect(page.locator("#errors tbody tr", has_text="circuit_open")).to_contain_text("×3")

    # Who spends: the keys by spend in the window, and the one that spent its budget.
    for name in ("alice-service", "team-on-a-budget"):
        expect(page.locator("#top-keys tbody tr", has_text=name)).to_be_visible()
    over = page.locator("#near-budget tbody tr.over-budget", has_text="team-on-a-budget")
    expect(over).to_be_visible()


def test_the_window_is_in_the_url_and_an_unknown_one_is_refused(
    gateway: Process, transactional_db: None, django_user_model: type
) -> None:
    django_user_model.objects.create_superuser("operator", "op@example.com", "a-long-password")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844})
            errors = log_in(page, gateway)
            page.goto(f"{gateway.url}/monitoring?window=7d")
            expect(page.locator(".windows button.active")).to_have_text("7d")
            expect(page.locator("#dashboard")).to_have_attribute("data-window", "7d")
            page.click("button[data-window='15m']")
            expect(page).to_have_url(re.compile(r"/monitoring\?window=15m$"))
            page.click("main h2 >> nth=0")  # a click elsewhere on the page switches nothing
            expect(page.locator(".windows button.active")).to_have_text("15m")

            reply = page.goto(f"{gateway.url}/monitoring?window=bogus")
            assert reply is not None and reply.status == 400
            expect(page.locator("h1")).to_contain_text("Unknown window")
            expect(page.locator("main a")).to_have_text(["15m", "1h", "24h", "7d"])
            page.click("main a:text-is('24h')")
            expect(page.locator(".windows button.active")).to_have_text("24h")
            assert errors == []
        finally:
            browser.close()
