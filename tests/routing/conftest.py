"""Fixtures for the routing rules: a clock the tests move by hand, scripted upstreams."""

from collections import deque
from collections.abc import Iterator
from typing import Any

import pytest

from routing import breaker, calls, router
from tests.routing.router_fakes import Upstreams


class FakeClock:
    """Time that passes only when the router sleeps or a test says so."""

    def __init__(self) -> None:
        self.now_s = 1000.0
        self.sleeps: list[float] = []  # every wait the router made, in order

    def monotonic(self) -> float:
        return self.now_s

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now_s += seconds

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeClock]:
    """The router's backoff and the breakers' cooldowns on a fake clock, so that the
    rules about time are checked exactly and in milliseconds; and a breaker registry of
    this test's own, so that no circuit opened here outlives it."""
    fake = FakeClock()
    monkeypatch.setattr(router, "sleep", fake.sleep)
    monkeypatch.setattr(router, "clock", fake.monotonic)
    monkeypatch.setattr(breaker, "clock", fake.monotonic)
    monkeypatch.setattr(breaker, "_breakers", {})
    monkeypatch.setattr(breaker, "opened", deque(maxlen=1000))  # never shared with Redis
    yield fake


@pytest.fixture
def rules(settings: Any) -> None:
    """The rules' settings, spelled out here rather than read from the environment."""
    settings.RETRY_BASE_DELAY_S = 0.5
    settings.RETRY_MAX_DELAY_S = 4.0
    settings.RETRY_AFTER_CAP_S = 10.0
    settings.BREAKER_FAILURE_THRESHOLD = 3
    settings.BREAKER_COOLDOWN_S = 30.0


@pytest.fixture
def upstreams(monkeypatch: pytest.MonkeyPatch, clock: FakeClock, rules: None) -> Any:
    """Endpoints that answer from scripts instead of over HTTP: `upstreams(primary=[...])`."""

    def make(**scripts: list[Any]) -> Upstreams:
        fake = Upstreams(scripts)
        monkeypatch.setattr(calls, "fetch_completion", fake.fetch_completion)
        return fake

    return make
