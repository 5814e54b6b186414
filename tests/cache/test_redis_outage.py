"""L2 fails open: with Redis killed mid-run, every request is still answered."""

import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from devtools.servers import RedisServer, private_redis
from tests.personas import Client, ModelFactory, wait_for_key, wait_for_model
from tests.processes import (
    Process,
    http,
    server_env,
    start_gateway,
    stop_process,
    upstream_hits,
)

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")


@pytest.fixture
def doomed_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own, to be killed."""
    with private_redis() as server:
        yield server


def test_requests_are_answered_after_redis_dies(
    doomed_redis: RedisServer, alice: Client, model_with: ModelFactory, fake_upstream: Process
) -> None:
    model, slow_model = model_with(""), model_with("delay/300/outage")
    env = {**server_env(), "REDIS_URL": doomed_redis.url}
    gateway: Process = start_gateway("redis-outage", env)
    url = f"{gateway.url}/v1/chat/completions"

    def ask(text: str, model: str = model) -> tuple[int, str, float]:
        started = time.monotonic()
        body = {"model": model, "messages": [{"role": "user", "content": text}]}
        reply = http(url, method="POST", key=alice.key, body=body)
        return reply.status, reply.headers.get("x-beastmode-cache", ""), time.monotonic() - started

    try:
        assert ask("before the outage")[:2] == (200, "miss")
        doomed_redis.kill()

        assert ask("before the outage")[:2] == (200, "exact")
        results = [ask(f"during the outage {i}") for i in range(20)]
        assert all(status == 200 and cache == "miss" for status, cache, _ in results)
        # Fails open: at most a short socket timeout per breaker window, never a stall.
        assert sum(seconds for *_, seconds in results) < 5
        assert [ask(f"during the outage {i}")[1] for i in range(3)] == ["exact"] * 3
        # Identical concurrent misses still share one call, within the node.
        with ThreadPoolExecutor(max_workers=6) as pool:
            slow = list(pool.map(lambda _: ask("together", slow_model), range(6)))
        assert [status for status, *_ in slow] == [200] * 6
        assert upstream_hits(fake_upstream, "/delay/300/outage/v1/chat/completions") == 1
        readiness = http(f"{gateway.url}/health/readiness")
        assert readiness.status == 503 and readiness.json()["redis"].startswith("error")
    finally:
        stop_process(gateway)


def test_with_redis_gone_a_node_still_opens_its_own_circuits(
    doomed_redis: RedisServer, alice: Client, model_with: ModelFactory
) -> None:
    """The shared circuits (routing/circuits.py) fall back to each process deciding alone."""
    model = model_with("status/500")
    env = {**server_env(), "REDIS_URL": doomed_redis.url,
           "BEASTMODE_BREAKER_COOLDOWN_S": "30"}  # fmt: skip
    gateway: Process = start_gateway("redis-outage-circuits", env)
    try:
        wait_for_model(gateway, wait_for_key(gateway, alice), model)
        doomed_redis.kill()
        body = {"model": model, "messages": [{"role": "user", "content": "anyone?"}]}
        url = f"{gateway.url}/v1/chat/completions"
        statuses = [http(url, method="POST", key=alice.key, body=body).status for _ in range(4)]
        assert statuses == [502, 502, 502, 503], "three failures open the circuit here"
        assert "Traceback" not in gateway.log()
    finally:
        stop_process(gateway)
