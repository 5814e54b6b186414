"""A circuit breaker per endpoint; its state is the endpoint's health.

closed → (threshold consecutive failures) → open → (cooldown) → half-open: one probe
request goes through; success closes the circuit, failure opens it again. A circuit that
opens here is shared with every process (routing/circuits.py), which opens its own until
the same moment.
"""

import time
from collections import deque
from dataclasses import dataclass

from django.conf import settings

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"

# The breakers' clock. Tests put a fake one here to cross cooldowns without waiting; it is
# read only while a circuit is open or opening, never on a closed circuit's requests.
clock = time.monotonic


@dataclass
class CircuitBreaker:
    failure_threshold: int
    cooldown_s: float
    endpoint_id: int = 0
    state: str = CLOSED
    consecutive_failures: int = 0
    opened_at: float = 0.0
    probe_in_flight: bool = False
    last_error: str = ""

    def allow_request(self) -> bool:
        if self.state == CLOSED:
            return True
        if self.state == OPEN and clock() - self.opened_at >= self.cooldown_s:
            self.state = HALF_OPEN
            self.probe_in_flight = False
        if self.state == HALF_OPEN and not self.probe_in_flight:
            self.probe_in_flight = True
            return True
        return False

    def retry_after_s(self) -> float:
        return max(0.0, self.cooldown_s - (clock() - self.opened_at))

    def record_success(self) -> None:
        self.state = CLOSED
        self.consecutive_failures = 0
        self.probe_in_flight = False

    def record_failure(self, error_class: str) -> None:
        self.last_error = error_class
        self.consecutive_failures += 1
        if self.state == HALF_OPEN or self.consecutive_failures >= self.failure_threshold:
            self.state = OPEN
            self.opened_at = clock()
            self.probe_in_flight = False
            opened.append((self.endpoint_id, self.cooldown_s, error_class))

    def open_for(self, remaining_s: float, error_class: str) -> None:
        """Open until `remaining_s` from now, as another process's circuit is (unless this
        one is open longer already, or its probe is on its way)."""
        ends_at = clock() + remaining_s
        if self.state == HALF_OPEN or (
            self.state == OPEN and self.opened_at + self.cooldown_s >= ends_at
        ):
            return
        self.state = OPEN
        self.opened_at = ends_at - self.cooldown_s
        self.probe_in_flight = False
        self.last_error = error_class

    def release_probe(self) -> None:
        """A half-open probe ended without a verdict (e.g. the client went away)."""
        self.probe_in_flight = False


_breakers: dict[int, CircuitBreaker] = {}
# Circuits that opened in this process, to be shared: (endpoint id, seconds open, error).
opened: deque[tuple[int, float, str]] = deque(maxlen=1000)


def for_endpoint(endpoint_id: int) -> CircuitBreaker:
    breaker = _breakers.get(endpoint_id)
    if breaker is None:
        breaker = _breakers[endpoint_id] = CircuitBreaker(
            failure_threshold=settings.BREAKER_FAILURE_THRESHOLD,
            cooldown_s=settings.BREAKER_COOLDOWN_S,
            endpoint_id=endpoint_id,
        )
    return breaker


def states() -> dict[int, CircuitBreaker]:
    return dict(_breakers)
