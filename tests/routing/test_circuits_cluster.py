"""Circuits across processes: one that opens on a node opens on the others within a second
(routing/circuits.py), through the real Redis, between two daphne processes."""

import re
from collections.abc import Iterator

import pytest
from django.conf import settings

from tests.personas import Client, ModelFactory, wait_for_key, wait_for_model
from tests.processes import (
    Process,
    Reply,
    http,
    server_env,
    start_gateway,
    stop_process,
    upstream_hits,
    wait_until,
)

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis")

# The suite's 1 s cooldown would close the circuit while the test looks at it.
NODE_ENV = {"BEASTMODE_BREAKER_COOLDOWN_S": "30"}


@pytest.fixture(scope="module")
def nodes(django_db_setup: None) -> Iterator[tuple[Process, Process]]:
    a = start_gateway("circuit-a", {**server_env(), **NODE_ENV})
    b = start_gateway("circuit-b", {**server_env(), **NODE_ENV})
    yield a, b
    stop_process(a)
    stop_process(b)


def ask(node: Process, client: Client, model: str) -> Reply:
    body = {"model": model, "messages": [{"role": "user", "content": "anyone there?"}]}
    return http(f"{node.url}/v1/chat/completions", method="POST", key=client.key, body=body)


def circuit_state(node: Process, endpoint: str) -> int | None:
    text = http(f"{node.url}/metrics").body.decode()
    found = re.search(rf'^beastmode_circuit_state{{endpoint="{endpoint}"}} (\S+)$', text, re.M)
    return int(float(found.group(1))) if found else None


def test_a_circuit_opened_on_one_node_is_open_on_the_other_within_a_second(
    nodes: tuple[Process, Process],
    alice: Client,
    model_with: ModelFactory,
    fake_upstream: Process,
) -> None:
    a, b = nodes
    model = model_with("status/500")
    for node in nodes:
        wait_for_model(node, wait_for_key(node, alice), model)
    for _ in range(settings.BREAKER_FAILURE_THRESHOLD):  # only node B sees the failures
        assert ask(b, alice, model).status == 502
    assert circuit_state(b, f"{model}-ep0") == 2

    wait_until(lambda: circuit_state(a, f"{model}-ep0") == 2, timeout_s=1.0)

    calls = upstream_hits(fake_upstream, "/status/500/v1/chat/completions")
    reply = ask(a, alice, model)
    assert reply.status == 503 and reply.json()["error"]["code"] == "circuit_open"
    assert upstream_hits(fake_upstream, "/status/500/v1/chat/completions") == calls
