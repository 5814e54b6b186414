"""A circuit breaker per endpoint; its state is the endpoint's health in this process.

closed → (threshold consecutive failures) → open → (cooldown) → half-open: one probe
request goes through; success closes the circuit, failure opens it again.
"""

import time
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

    def release_probe(self) -> None:
        """A half-open probe ended without a verdict (e.g. the client went away)."""
        self.probe_in_flight = False


_breakers: dict[int, CircuitBreaker] = {}


def for_endpoint(endpoint_id: int) -> CircuitBreaker:
    breaker = _breakers.get(endpoint_id)
    if breaker is None:
        breaker = _breakers[endpoint_id] = CircuitBreaker(
            failure_threshold=settings.BREAKER_FAILURE_THRESHOLD,
            cooldown_s=settings.BREAKER_COOLDOWN_S,
        )
    return breaker


def states() -> dict[int, CircuitBreaker]:
    return dict(_breakers)
