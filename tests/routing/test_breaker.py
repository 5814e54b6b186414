import time

from routing.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


def test_breaker_opens_after_threshold_consecutive_failures() -> None:
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=60)
    for _ in range(2):
        breaker.record_failure("upstream_server_error")
    assert breaker.state == CLOSED and breaker.allow_request()
    breaker.record_failure("upstream_server_error")
    assert breaker.state == OPEN and not breaker.allow_request()
    assert 59 < breaker.retry_after_s() <= 60


def test_a_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=60)
    breaker.record_failure("x")
    breaker.record_success()
    breaker.record_failure("x")
    assert breaker.state == CLOSED


def test_after_cooldown_exactly_one_probe_passes_and_its_outcome_decides() -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=0.01)
    breaker.record_failure("x")
    time.sleep(0.02)
    assert breaker.allow_request() and breaker.state == HALF_OPEN
    assert not breaker.allow_request(), "only one probe at a time"
    breaker.record_failure("x")
    assert breaker.state == OPEN

    time.sleep(0.02)
    assert breaker.allow_request()
    breaker.record_success()
    assert breaker.state == CLOSED and breaker.allow_request()
