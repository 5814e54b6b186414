"""/monitoring, its websocket and the JSON snapshot: staff only, one producer, live pushes."""

import contextlib
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client as BrowserClient
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from monitoring.snapshot import WINDOWS, DashboardSnapshot
from tests.processes import Process, http, server_env, start_gateway, stop_process, wait_until

SNAPSHOT_KEYS = set(DashboardSnapshot.__annotations__)


@pytest.fixture(scope="module")
def gateway(django_db_setup: None) -> Iterator[Process]:
    """A gateway of this module's own (in-process channel layer): the dashboards here must
    not share a producer, or its timing, with the rest of the suite's traffic."""
    env = {k: v for k, v in server_env().items() if k not in ("REDIS_URL", "CELERY_BROKER_URL")}
    process = start_gateway("dashboard", env)
    yield process
    stop_process(process)


def socket(gateway: Process, browser: BrowserClient | None, origin: str = "") -> ClientConnection:
    """A websocket to the live gateway, as the browser's session (or anonymous)."""
    headers = {}
    if browser is not None:
        headers["Cookie"] = f"sessionid={browser.cookies['sessionid'].value}"
    url = gateway.url.replace("http://", "ws://") + "/ws/monitoring/"
    return connect(url, origin=origin or gateway.url, additional_headers=headers, proxy=None)


def receive(connection: ClientConnection) -> dict[str, Any]:
    return json.loads(connection.recv(timeout=5))


def snapshots_computed(gateway: Process) -> float:
    text = http(f"{gateway.url}/metrics").body.decode()
    match = re.search(r"^beastmode_dashboard_snapshots_total (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def test_staff_receive_a_snapshot_at_once_and_then_pushes(
    gateway: Process, admin_browser: BrowserClient
) -> None:
    with socket(gateway, admin_browser) as connection:
        messages = [receive(connection) for _ in range(3)]
    assert all(set(m) == SNAPSHOT_KEYS for m in messages)
    assert messages[-1]["generated_at"] > messages[0]["generated_at"]


def test_switching_the_window_switches_the_stream(
    gateway: Process, admin_browser: BrowserClient
) -> None:
    with socket(gateway, admin_browser) as connection:
        receive(connection)
        connection.send(json.dumps({"window": "24h"}))
        assert wait_until(lambda: receive(connection)["window"] == "24h")


def test_anonymous_non_staff_and_cross_origin_are_refused(
    gateway: Process, admin_browser: BrowserClient, django_user_model: Any
) -> None:
    clerk = django_user_model.objects.create_user("clerk", password="pw")
    clerk_browser = BrowserClient()
    clerk_browser.force_login(clerk)
    for browser, origin in (
        (None, ""),
        (admin_browser, "http://evil.example"),
        (clerk_browser, ""),
    ):
        with pytest.raises(InvalidStatus):
            socket(gateway, browser, origin).recv(timeout=5)


def test_many_dashboards_cost_one_computation_per_window_and_tick(
    gateway: Process, admin_browser: BrowserClient
) -> None:
    with contextlib.ExitStack() as stack:
        connections = [stack.enter_context(socket(gateway, admin_browser)) for _ in range(10)]
        for connection in connections:
            receive(connection)  # the snapshot sent on connect
        before = snapshots_computed(gateway)
        for _ in range(3):  # three ticks, each delivered to all ten
            for connection in connections:
                receive(connection)
        computed = snapshots_computed(gateway) - before
    assert computed <= 4 * len(WINDOWS)  # at most four ticks' worth, not ten dashboards' worth


def test_the_page_is_staff_only_and_server_rendered(
    admin_browser: BrowserClient, transactional_db: None
) -> None:
    assert BrowserClient().get("/monitoring").status_code == 302  # to the admin login
    page = admin_browser.get("/monitoring").content.decode()
    assert 'data-kpi="requests"' in page and 'id="first-snapshot"' in page
    assert "/static/plotly/plotly.min.js" in page and "cdn" not in page.lower()
    assert admin_browser.get("/static/plotly/plotly.min.js").status_code == 200


def test_the_json_snapshot_needs_staff_or_the_metrics_token(
    admin_browser: BrowserClient, settings: Any, transactional_db: None
) -> None:
    settings.METRICS_TOKEN = "s3cret"
    assert BrowserClient().get("/monitoring/api/snapshot").status_code == 401
    with_token = BrowserClient().get(
        "/monitoring/api/snapshot?window=15m", HTTP_AUTHORIZATION="Bearer s3cret"
    )
    assert with_token.status_code == 200 and with_token.json()["window"] == "15m"
    assert set(admin_browser.get("/monitoring/api/snapshot").json()) == SNAPSHOT_KEYS


def test_browsers_asking_for_a_favicon_get_one_not_a_404(gateway: Process) -> None:
    reply = http(f"{gateway.url}/favicon.ico")  # redirected to the static icon
    assert reply.status == 200 and reply.headers["content-type"].startswith("image/svg+xml")
    assert reply.body.startswith(b"<svg")


def test_an_unknown_window_is_refused_with_the_valid_ones_named(
    admin_browser: BrowserClient, transactional_db: None
) -> None:
    page = admin_browser.get("/monitoring?window=bogus")
    assert page.status_code == 400
    assert all(f'href="?window={name}"' in page.content.decode() for name in WINDOWS)
    api = admin_browser.get("/monitoring/api/snapshot?window=bogus")
    assert api.status_code == 400
    assert api.json()["error"]["message"] == "Unknown window 'bogus': use one of 15m, 1h, 24h, 7d."
    chosen = admin_browser.get("/monitoring?window=24h").content.decode()
    assert 'data-window="24h" class="active"' in chosen and 'data-window="24h">' in chosen
