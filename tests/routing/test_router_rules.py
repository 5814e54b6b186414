"""The router's retry rules on a fake clock with scripted upstreams: retries, backoff,
Retry-After, fallbacks. No sockets; each test runs in milliseconds. Circuits and the final
error: test_router_circuits.py; the same rules through the real server: test_router.py."""

from typing import Any

import pytest

from beastmode.lib.errors import GatewayError
from routing import breaker, router
from routing.registry import RouteConfig
from tests.routing.conftest import FakeClock
from tests.routing.router_fakes import (
    ANSWER,
    NOT_RETRYABLE,
    RETRYABLE,
    complete,
    endpoint,
    error_classes,
    failure,
    route,
)

# Retries on the same endpoint


@pytest.mark.parametrize("error_class", RETRYABLE)
def test_a_retryable_error_is_retried_up_to_max_retries_then_reported(
    upstreams: Any, clock: FakeClock, error_class: str
) -> None:
    up = upstreams(primary=[failure(error_class)])
    answer, trace = complete(route(endpoint("primary", max_retries=2)))

    assert isinstance(answer, GatewayError) and answer.error_class == error_class
    assert up.calls == ["primary"] * 3
    assert len(clock.sleeps) == 2, "a wait before each retry, none after the last"
    assert error_classes(trace) == [error_class] * 3 and trace.fallbacks == 0


def test_a_flaky_endpoint_answers_after_retries_and_its_circuit_stays_closed(
    upstreams: Any, clock: FakeClock
) -> None:
    up = upstreams(primary=[failure("upstream_server_error")] * 2 + [ANSWER])
    answer, trace = complete(route(endpoint("primary", max_retries=2)))

    assert answer == ANSWER and up.calls == ["primary"] * 3
    assert error_classes(trace) == ["upstream_server_error", "upstream_server_error", None]
    assert trace.endpoint is not None and trace.endpoint.name == "primary"
    primary = breaker.for_endpoint(endpoint("primary").id)
    assert (primary.state, primary.consecutive_failures) == (breaker.CLOSED, 0)


@pytest.mark.parametrize("error_class", NOT_RETRYABLE)
def test_a_non_retryable_error_moves_on_to_the_fallback_at_once(
    upstreams: Any, clock: FakeClock, error_class: str
) -> None:
    up = upstreams(primary=[failure(error_class)], fallback=[ANSWER])
    answer, trace = complete(route(endpoint("primary", max_retries=3), endpoint("fallback")))

    assert answer == ANSWER
    assert up.calls == ["primary", "fallback"] and clock.sleeps == []
    assert error_classes(trace) == [error_class, None] and trace.fallbacks == 1


def test_max_retries_zero_means_one_attempt(upstreams: Any, clock: FakeClock) -> None:
    up = upstreams(primary=[failure("upstream_server_error")])
    answer, _ = complete(route(endpoint("primary", max_retries=0)))

    assert isinstance(answer, GatewayError) and up.calls == ["primary"] and clock.sleeps == []


# Waiting before a retry


def test_retry_after_is_waited_exactly_before_the_retry(upstreams: Any, clock: FakeClock) -> None:
    up = upstreams(primary=[failure("upstream_rate_limited", retry_after_s=1.5), ANSWER])
    answer, trace = complete(route(endpoint("primary", max_retries=1)))

    assert answer == ANSWER and up.calls == ["primary", "primary"]
    assert clock.sleeps == [1.5]
    assert len(trace.attempts) == 2 and trace.fallbacks == 0


def test_retry_after_at_the_cap_is_still_honoured(upstreams: Any, clock: FakeClock) -> None:
    upstreams(primary=[failure("upstream_rate_limited", retry_after_s=10.0), ANSWER])
    answer, _ = complete(route(endpoint("primary", max_retries=1)))

    assert answer == ANSWER and clock.sleeps == [10.0]


def test_retry_after_beyond_the_cap_falls_back_without_waiting(
    upstreams: Any, clock: FakeClock
) -> None:
    up = upstreams(
        primary=[failure("upstream_rate_limited", retry_after_s=10.5)], fallback=[ANSWER]
    )
    answer, trace = complete(route(endpoint("primary", max_retries=3), endpoint("fallback")))

    assert answer == ANSWER and clock.sleeps == []
    assert up.calls == ["primary", "fallback"]
    assert trace.endpoint is not None and trace.endpoint.name == "fallback"
    assert (len(trace.attempts), trace.fallbacks) == (2, 1)


def test_a_final_retry_after_is_passed_on_to_the_caller(upstreams: Any, clock: FakeClock) -> None:
    upstreams(primary=[failure("upstream_rate_limited", retry_after_s=2.0)])
    answer, _ = complete(route(endpoint("primary", max_retries=1)))

    assert isinstance(answer, GatewayError)
    assert (answer.error_class, answer.retry_after_s) == ("upstream_rate_limited", 2.0)


def test_backoff_doubles_per_retry_up_to_the_maximum_with_jitter_in_the_upper_half(
    upstreams: Any, clock: FakeClock, settings: Any
) -> None:
    settings.BREAKER_FAILURE_THRESHOLD = 10**6  # the breaker is not under test here
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]  # base 0.5 s doubled, at most 4 s
    up = upstreams(primary=[failure("upstream_server_error")] * 6 + [ANSWER])
    waits: list[list[float]] = []
    for _ in range(200):
        up.scripts["primary"] = [failure("upstream_server_error")] * 6 + [ANSWER]
        clock.sleeps.clear()
        answer, _ = complete(route(endpoint("primary", max_retries=6)))
        assert answer == ANSWER
        waits.append(list(clock.sleeps))

    for retry, ceiling in enumerate(ceilings):
        seen = [w[retry] for w in waits]
        assert all(ceiling / 2 <= s <= ceiling for s in seen), (retry, min(seen), max(seen))
        # jitter: callers that failed together do not retry together
        assert min(seen) < ceiling * 0.6 and max(seen) > ceiling * 0.9
        assert len(set(seen)) > 150


# An endpoint's total timeout bounds all its attempts


def test_retries_stop_when_the_endpoints_total_timeout_is_spent(
    upstreams: Any, clock: FakeClock
) -> None:
    up = upstreams(primary=[failure("total_timeout")], fallback=[ANSWER])
    # The primary times out after 6 s (or the rest of its budget), the fallback answers.
    up.on_call = lambda ep, budget_s: clock.advance(min(6.0, budget_s) * (ep.name == "primary"))
    primary = endpoint("primary", max_retries=5, total_timeout_s=10)
    started = clock.now_s

    answer, trace = complete(route(primary, endpoint("fallback")))

    assert answer == ANSWER and up.calls == ["primary", "primary", "fallback"]
    assert up.budgets[:2] == [10.0, pytest.approx(10.0 - 6.0 - clock.sleeps[0])]
    assert clock.now_s - started == pytest.approx(10.0), "the fallback starts at the timeout"
    assert error_classes(trace) == ["total_timeout", "total_timeout", None]


def test_a_wait_that_would_pass_the_total_timeout_falls_back_at_once(
    upstreams: Any, clock: FakeClock
) -> None:
    up = upstreams(primary=[failure("upstream_rate_limited", retry_after_s=6.0)], fallback=[ANSWER])
    answer, _ = complete(route(endpoint("primary", max_retries=3, total_timeout_s=5),
                               endpoint("fallback")))  # fmt: skip

    assert answer == ANSWER and clock.sleeps == [] and up.calls == ["primary", "fallback"]


def test_the_models_timeout_bounds_every_endpoint_and_says_it_struck(
    upstreams: Any, clock: FakeClock
) -> None:
    up = upstreams(primary=[failure("total_timeout")], fallback=[ANSWER])
    up.on_call = lambda ep, budget_s: clock.advance(budget_s)  # each attempt takes all it may
    chain = RouteConfig(
        model_name="m",
        endpoints=(endpoint("primary", max_retries=2, total_timeout_s=30), endpoint("fallback")),
        timeout_s=10,
    )

    answer, _ = complete(chain)

    assert isinstance(answer, GatewayError) and answer.error_class == "request_timeout"
    assert "timeout of 10 s (retries and fallbacks included)" in answer.message
    assert up.calls == ["primary"] and up.budgets == [10.0], "the model's limit, not the 30 s"
    assert router.worst_case_s(chain) == 10


# Falling back along the chain


def test_a_failing_primary_falls_back_to_the_next_endpoint(
    upstreams: Any, clock: FakeClock
) -> None:
    up = upstreams(primary=[failure("connection_refused")], fallback=[ANSWER])
    answer, trace = complete(route(endpoint("primary"), endpoint("fallback")))

    assert answer == ANSWER and up.calls == ["primary", "fallback"]
    assert trace.endpoint is not None and trace.endpoint.name == "fallback"
    assert [(a.endpoint, a.error_class, a.upstream_status) for a in trace.attempts] == [
        ("primary", "connection_refused", 599),
        ("fallback", None, 200),
    ]
    assert trace.fallbacks == 1


def test_each_endpoint_gets_its_own_retries_before_the_next(
    upstreams: Any, clock: FakeClock
) -> None:
    up = upstreams(
        a=[failure("upstream_server_error")], b=[failure("upstream_server_error")], c=[ANSWER]
    )
    answer, trace = complete(
        route(endpoint("a", max_retries=1), endpoint("b", max_retries=1), endpoint("c"))
    )

    assert answer == ANSWER and up.calls == ["a", "a", "b", "b", "c"]
    assert trace.fallbacks == 2


def test_upstream_bad_request_stops_at_once_without_retry_or_fallback(
    upstreams: Any, clock: FakeClock
) -> None:
    bad = failure("upstream_bad_request")
    up = upstreams(primary=[bad], fallback=[ANSWER])
    answer, trace = complete(route(endpoint("primary", max_retries=3), endpoint("fallback")))

    assert answer is bad, "the upstream's own words reach the caller"
    assert up.calls == ["primary"] and clock.sleeps == []
    assert error_classes(trace) == ["upstream_bad_request"]
    assert breaker.for_endpoint(endpoint("primary").id).consecutive_failures == 0, (
        "the caller's mistake is not held against the endpoint"
    )


def test_a_route_without_endpoints_is_no_endpoint(upstreams: Any, clock: FakeClock) -> None:
    upstreams()
    answer, _ = complete(route())

    assert isinstance(answer, GatewayError) and answer.error_class == "no_endpoint"
    assert answer.status == 503 and "'m'" in answer.message


# Circuit breaking
