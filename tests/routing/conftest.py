"""Fixtures for the routing rules: a clock the tests move by hand."""

from collections.abc import Iterator

import pytest

from routing import breaker, router


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
    monkeypatch.setattr(breaker, "clock", fake.monotonic)
    monkeypatch.setattr(breaker, "_breakers", {})
    yield fake
