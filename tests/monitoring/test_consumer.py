"""The dashboard's websocket consumer in-process, through Channels' WebsocketCommunicator:
the same ASGI stack as in production (origin check, session auth), no server."""

from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.test import Client as BrowserClient

from monitoring.snapshot import DashboardSnapshot
from monitoring.websocket_urls import websocket_application

SNAPSHOT_KEYS = set(DashboardSnapshot.__annotations__)


@pytest.fixture(autouse=True)
def in_memory_layer(settings: Any) -> None:
    """Each test's event loop is its own; a Redis layer's connections would outlive it."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


def headers(browser: BrowserClient | None, origin: str) -> list[tuple[bytes, bytes]]:
    pairs = [(b"host", b"127.0.0.1"), (b"origin", origin.encode())]
    if browser is not None:
        pairs.append((b"cookie", f"sessionid={browser.cookies['sessionid'].value}".encode()))
    return pairs


@async_to_sync
async def converse(
    browser: BrowserClient | None,
    origin: str = "http://127.0.0.1",
    send: list[dict[str, Any]] | None = None,
) -> tuple[bool, list[dict[str, Any]]]:
    """Connect, send each message, and collect what comes back: (accepted, messages)."""
    communicator = WebsocketCommunicator(
        websocket_application, "/ws/monitoring/", headers=headers(browser, origin)
    )
    accepted, _ = await communicator.connect(timeout=10)
    received: list[dict[str, Any]] = []
    if accepted:
        received.append(await communicator.receive_json_from(timeout=10))
        for message in send or []:
            await communicator.send_json_to(message)
            received.append(await communicator.receive_json_from(timeout=10))
    await communicator.disconnect()
    return accepted, received


def test_staff_get_the_current_snapshot_on_connect(admin_browser: BrowserClient) -> None:
    accepted, (snapshot,) = converse(admin_browser)
    assert accepted
    assert set(snapshot) == SNAPSHOT_KEYS and snapshot["window"] == "1h"


def test_a_window_message_switches_to_that_window(admin_browser: BrowserClient) -> None:
    accepted, messages = converse(admin_browser, send=[{"window": "7d"}])
    assert accepted and [m["window"] for m in messages] == ["1h", "7d"]


def test_anonymous_non_staff_and_cross_origin_are_refused(
    admin_browser: BrowserClient, django_user_model: Any
) -> None:
    clerk = BrowserClient()
    clerk.force_login(django_user_model.objects.create_user("clerk", password="pw"))
    assert converse(None) == (False, [])
    assert converse(clerk) == (False, [])
    assert converse(admin_browser, origin="http://evil.example") == (False, [])
    # The same host on another port, or scheme, is another origin (another site's page).
    assert converse(admin_browser, origin="http://127.0.0.1:6666") == (False, [])
    assert converse(admin_browser, origin="https://127.0.0.1") == (False, [])


@pytest.mark.parametrize("message", [{"window": "1y"}, ["7d"], {"other": 1}])
def test_unknown_messages_are_ignored(admin_browser: BrowserClient, message: Any) -> None:
    """A bad message neither closes the socket nor changes the window."""

    @async_to_sync
    async def talk() -> tuple[dict[str, Any], dict[str, Any]]:
        communicator = WebsocketCommunicator(
            websocket_application,
            "/ws/monitoring/",
            headers=headers(admin_browser, "http://127.0.0.1"),
        )
        await communicator.connect(timeout=10)
        first = await communicator.receive_json_from(timeout=10)
        await communicator.send_json_to(message)
        await communicator.send_json_to({"window": "24h"})  # still listening afterwards
        second = await communicator.receive_json_from(timeout=10)
        await communicator.disconnect()
        return first, second

    first, second = talk()
    assert (first["window"], second["window"]) == ("1h", "24h")
