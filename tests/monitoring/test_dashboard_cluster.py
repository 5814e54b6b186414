"""The dashboard's websocket as a cluster runs it: gateway processes sharing Redis (the
channel layer, the producer lock, the shared snapshot) and the database."""

import contextlib
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.core.cache import cache
from django.test import Client as BrowserClient
from websockets.sync.client import ClientConnection, connect

from monitoring import producer
from monitoring.websocket_urls import websocket_application
from tests.processes import Process, server_env, start_gateway, stop_process

pytestmark = pytest.mark.skipif(not django_settings.REDIS_URL, reason="needs Redis")

PUSH_INTERVAL_S = 0.5


@pytest.fixture(scope="module")
def node_a(django_db_setup: None) -> Iterator[Process]:
    process = start_gateway("node-a", node_env(PUSH_INTERVAL_S))
    yield process
    stop_process(process)


@pytest.fixture(scope="module")
def node_b(django_db_setup: None) -> Iterator[Process]:
    process = start_gateway("node-b", node_env(PUSH_INTERVAL_S))
    yield process
    stop_process(process)


def node_env(push_interval_s: float) -> dict[str, str]:
    return {**server_env(), "BEASTMODE_MONITORING_PUSH_INTERVAL_S": str(push_interval_s)}


def dashboard(node: Process, browser: BrowserClient) -> ClientConnection:
    url = node.url.replace("http://", "ws://") + "/ws/monitoring/"
    cookie = f"sessionid={browser.cookies['sessionid'].value}"
    return connect(url, origin=node.url, additional_headers={"Cookie": cookie}, proxy=None)


def frame(connection: ClientConnection, timeout_s: float = 5) -> dict[str, Any]:
    return json.loads(connection.recv(timeout=timeout_s))


def wait_for_window(connection: ClientConnection, window: str) -> dict[str, Any]:
    """The first frame of `window` (pushes of the window before may still be queued)."""
    while (snapshot := frame(connection))["window"] != window:
        pass
    return snapshot


def generated_at(snapshot: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(snapshot["generated_at"])


def test_idle_dashboards_stay_connected_on_the_redis_channel_layer(
    admin_browser: BrowserClient,
) -> None:
    """With no push for longer than the layer's blocking pop and redis-py's default socket
    timeout together, every dashboard still answers a window switch (it dropped with 1011)."""
    quiet = start_gateway("quiet-node", node_env(push_interval_s=3600))
    try:
        with contextlib.ExitStack() as stack:
            connections = [stack.enter_context(dashboard(quiet, admin_browser)) for _ in range(4)]
            for connection in connections:
                frame(connection)  # the first frame; the next push is an hour away
            time.sleep(11)  # > 5 s pop + 5 s default socket timeout: the failing read
            for connection in connections:
                connection.send(json.dumps({"window": "7d"}))
                assert wait_for_window(connection, "7d")
        assert "Traceback" not in quiet.log()
    finally:
        stop_process(quiet)
        cache.delete(producer.LEADER_KEY)  # its lock would outlive it by three hours


def test_the_layers_socket_timeout_outlasts_its_blocking_pop() -> None:
    (host,) = django_settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"]
    assert host["socket_timeout"] > get_channel_layer().brpop_timeout


def test_a_node_that_does_not_produce_sends_the_producers_current_snapshot(
    node_a: Process, node_b: Process, admin_browser: BrowserClient
) -> None:
    """On connect and on a window switch, a node sends the snapshot the producer (on any
    node) made last, not one it computed itself when a dashboard first connected to it."""
    with dashboard(node_a, admin_browser) as on_a:
        frame(on_a)
        frame(on_a)  # node A now produces; its pushes arrive every PUSH_INTERVAL_S
        with dashboard(node_b, admin_browser) as on_b:  # B keeps its own 1h and 24h
            frame(on_b)
            on_b.send(json.dumps({"window": "24h"}))
            wait_for_window(on_b, "24h")
        for _ in range(6):  # three seconds of the producer's ticks
            frame(on_a)
        asked_at = datetime.now(UTC)
        with dashboard(node_b, admin_browser) as on_b:
            first = frame(on_b)
            on_b.send(json.dumps({"window": "24h"}))
            switched = wait_for_window(on_b, "24h")
    for snapshot in (first, switched):
        age_s = (asked_at - generated_at(snapshot)).total_seconds()
        assert age_s < 3 * PUSH_INTERVAL_S, snapshot["window"]


def test_a_consumer_that_fails_leaves_its_group(admin_browser: BrowserClient) -> None:
    """A consumer whose handler raises (here: a frame that is not JSON) gets no
    `disconnect`; it must still leave its group, or the group keeps a dead member."""
    group_key = "asgi:group:monitoring.1h"
    store = redis.Redis.from_url(django_settings.REDIS_URL)
    cookie = f"sessionid={admin_browser.cookies['sessionid'].value}".encode()
    headers = [(b"host", b"127.0.0.1"), (b"origin", b"http://127.0.0.1"), (b"cookie", cookie)]

    @async_to_sync
    async def connect_then_fail() -> tuple[set[bytes], set[bytes]]:
        communicator = WebsocketCommunicator(websocket_application, "/ws/monitoring/", headers)
        accepted, _ = await communicator.connect(timeout=10)
        assert accepted
        await communicator.receive_json_from(timeout=10)
        joined = set(store.zrange(group_key, 0, -1))
        await communicator.send_to(text_data="not json")
        with pytest.raises(ValueError):
            await communicator.wait(timeout=5)
        left = set(store.zrange(group_key, 0, -1))
        await get_channel_layer().close_pools()
        return joined, left

    try:
        joined, left = connect_then_fail()
    finally:
        store.close()
    assert joined - left, "the failed consumer was in the group and is gone from it"
