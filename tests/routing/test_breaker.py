"""The circuit breaker's states: closed → open → (cooldown) → half-open → closed or open."""

from routing import breaker as breakers
from routing.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from tests.routing.conftest import FakeClock


def test_breaker_opens_after_threshold_consecutive_failures(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=60)
    for _ in range(2):
        breaker.record_failure("upstream_server_error")
    assert breaker.state == CLOSED and breaker.allow_request()
    breaker.record_failure("upstream_server_error")
    assert breaker.state == OPEN and not breaker.allow_request()
    assert breaker.retry_after_s() == 60
    assert breaker.last_error == "upstream_server_error"


def test_a_success_resets_the_failure_count(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=60)
    breaker.record_failure("x")
    breaker.record_success()
    breaker.record_failure("x")
    assert breaker.state == CLOSED


def test_an_open_circuit_stays_open_until_the_cooldown_is_over(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=30)
    breaker.record_failure("x")
    clock.advance(29.9)
    assert not breaker.allow_request() and breaker.state == OPEN
    assert round(breaker.retry_after_s(), 6) == 0.1
    clock.advance(0.1)
    assert breaker.retry_after_s() == 0
    assert breaker.allow_request() and breaker.state == HALF_OPEN


def test_after_cooldown_exactly_one_probe_passes_and_its_outcome_decides(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=30)
    breaker.record_failure("x")
    clock.advance(30)
    assert breaker.allow_request() and breaker.state == HALF_OPEN
    assert not breaker.allow_request(), "only one probe at a time"
    breaker.record_failure("x")
    assert breaker.state == OPEN
    assert breaker.retry_after_s() == 30, "a failed probe starts a whole new cooldown"

    clock.advance(30)
    assert breaker.allow_request()
    breaker.record_success()
    assert breaker.state == CLOSED and breaker.allow_request() and breaker.allow_request()


def test_a_probe_that_ends_without_a_verdict_lets_the_next_request_probe(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=30)
    breaker.record_failure("x")
    clock.advance(30)
    assert breaker.allow_request()
    breaker.release_probe()  # e.g. the client went away
    assert breaker.state == HALF_OPEN
    assert breaker.allow_request(), "the next request probes"
    assert not breaker.allow_request()


def test_one_failure_in_half_open_reopens_whatever_the_threshold(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=5, cooldown_s=30)
    for _ in range(5):
        breaker.record_failure("x")
    clock.advance(30)
    assert breaker.allow_request()
    breaker.record_failure("x")
    assert breaker.state == OPEN and not breaker.allow_request()


def test_a_circuit_opened_elsewhere_opens_here_until_the_same_moment(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=30)
    breaker.open_for(12.5, "upstream_server_error")
    assert breaker.state == OPEN and not breaker.allow_request()
    assert breaker.retry_after_s() == 12.5 and breaker.last_error == "upstream_server_error"
    clock.advance(12.5)
    assert breaker.allow_request() and breaker.state == HALF_OPEN  # this process probes


def test_a_shared_circuit_neither_shortens_a_longer_one_nor_stops_a_probe(
    clock: FakeClock,
) -> None:
    longer = CircuitBreaker(failure_threshold=1, cooldown_s=30)
    longer.record_failure("x")
    longer.open_for(5, "y")
    assert longer.retry_after_s() == 30 and longer.last_error == "x"
    probing = CircuitBreaker(failure_threshold=1, cooldown_s=30)
    probing.record_failure("x")
    clock.advance(30)
    assert probing.allow_request()  # the probe is on its way
    probing.open_for(30, "y")
    assert probing.state == HALF_OPEN


def test_a_circuit_that_opens_is_queued_to_be_shared(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=30, endpoint_id=7)
    breaker.record_failure("upstream_timeout")
    assert list(breakers.opened) == [(7, 30, "upstream_timeout")]
