"""The router's circuit breaking, streams' failures and the final error, on a fake clock
with scripted upstreams (tests/routing/router_fakes.py). No sockets."""

import asyncio
from typing import Any

import pytest

from beastmode.lib.errors import KINDS, GatewayError
from routing import breaker, calls, router
from routing.registry import EndpointConfig
from tests.routing.conftest import FakeClock
from tests.routing.router_fakes import (
    ANSWER,
    Upstreams,
    complete,
    endpoint,
    error_classes,
    failure,
    route,
)


def open_circuit(up: Upstreams, name: str) -> None:
    """Threshold (3) failed requests on a one-endpoint route: its circuit opens."""
    up.scripts[name] = [failure("upstream_server_error")]
    for _ in range(3):
        complete(route(endpoint(name)))


def test_repeated_failures_open_the_circuit_and_it_is_skipped_without_a_call(
    upstreams: Any, clock: FakeClock
) -> None:
    up = upstreams(primary=[], fallback=[ANSWER])
    open_circuit(up, "primary")
    assert breaker.for_endpoint(endpoint("primary").id).state == breaker.OPEN
    up.calls.clear()

    answer, trace = complete(route(endpoint("primary", max_retries=2), endpoint("fallback")))

    assert answer == ANSWER and up.calls == ["fallback"], "the primary was not called"
    assert error_classes(trace) == [None] and trace.fallbacks == 0


def test_a_request_stops_retrying_an_endpoint_once_its_circuit_opens(
    upstreams: Any, clock: FakeClock
) -> None:
    up = upstreams(primary=[failure("upstream_server_error")], fallback=[ANSWER])
    answer, _ = complete(route(endpoint("primary", max_retries=5), endpoint("fallback")))

    assert answer == ANSWER
    assert up.calls == ["primary"] * 3 + ["fallback"], "threshold 3 opened it mid-request"
    assert len(clock.sleeps) == 2, "no wait for a retry the open circuit refuses"


def test_every_circuit_open_is_circuit_open_with_the_shortest_retry_after(
    upstreams: Any, clock: FakeClock
) -> None:
    up = upstreams(a=[], b=[])
    open_circuit(up, "a")
    clock.advance(10)
    open_circuit(up, "b")
    clock.advance(5)  # a: 15 s of its 30 s cooldown left; b: 25 s
    up.calls.clear()

    answer, trace = complete(route(endpoint("a"), endpoint("b")))

    assert isinstance(answer, GatewayError) and answer.error_class == "circuit_open"
    assert answer.status == 503 and answer.retry_after_s == 15
    assert "'a' (a.test)" in answer.message and "'b' (b.test)" in answer.message
    assert up.calls == [] and trace.attempts == [], "answered without calling upstream"


def test_circuit_open_says_retry_after_at_least_a_second(upstreams: Any, clock: FakeClock) -> None:
    up = upstreams(a=[])
    open_circuit(up, "a")
    clock.advance(29.8)

    answer, _ = complete(route(endpoint("a")))

    assert isinstance(answer, GatewayError) and answer.error_class == "circuit_open"
    assert answer.retry_after_s == 1.0


def test_after_the_cooldown_one_request_probes_and_a_success_closes_the_circuit(
    upstreams: Any, clock: FakeClock
) -> None:
    up = upstreams(primary=[], fallback=[ANSWER])
    open_circuit(up, "primary")
    up.scripts["primary"] = [ANSWER]
    clock.advance(30)
    up.calls.clear()

    answer, trace = complete(route(endpoint("primary"), endpoint("fallback")))

    assert answer == ANSWER and up.calls == ["primary"]
    assert trace.endpoint is not None and trace.endpoint.name == "primary"
    assert breaker.for_endpoint(endpoint("primary").id).state == breaker.CLOSED


def test_a_failed_probe_reopens_the_circuit_and_the_request_falls_back(
    upstreams: Any, clock: FakeClock
) -> None:
    up = upstreams(primary=[], fallback=[ANSWER])
    open_circuit(up, "primary")
    clock.advance(30)
    up.calls.clear()

    answer, _ = complete(route(endpoint("primary", max_retries=3), endpoint("fallback")))

    assert answer == ANSWER
    assert up.calls == ["primary", "fallback"], "one probe, no retries on a half-open circuit"
    assert clock.sleeps == [], "no wait for a retry the reopened circuit refuses"
    primary = breaker.for_endpoint(endpoint("primary").id)
    assert primary.state == breaker.OPEN and primary.retry_after_s() == 30


def test_while_one_request_probes_the_others_fall_back(
    upstreams: Any, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    up = upstreams(primary=[], fallback=[ANSWER])
    open_circuit(up, "primary")
    clock.advance(30)
    up.calls.clear()
    probe_may_answer = asyncio.Event()

    async def slow_primary(model_name: str, ep: EndpointConfig, body: Any, **_: Any) -> Any:
        up.calls.append(ep.name)
        if ep.name == "primary":
            await probe_may_answer.wait()
        return {**ANSWER, "from": ep.name}

    chain = route(endpoint("primary"), endpoint("fallback"))

    monkeypatch.setattr(calls, "fetch_completion", slow_primary)

    async def two_requests() -> list[Any]:
        probe = asyncio.create_task(router.complete("m", chain, {}, router.Trace()))
        await asyncio.sleep(0)  # the probe is in flight
        other = await router.complete("m", chain, {}, router.Trace())
        probe_may_answer.set()
        return [await probe, other]

    probe_answer, other_answer = asyncio.run(two_requests())

    assert (probe_answer["from"], other_answer["from"]) == ("primary", "fallback")
    assert breaker.for_endpoint(endpoint("primary").id).state == breaker.CLOSED


def test_a_probe_cancelled_with_its_client_leaves_no_verdict(
    upstreams: Any, clock: FakeClock
) -> None:
    up = upstreams(primary=[], fallback=[ANSWER])
    open_circuit(up, "primary")
    clock.advance(30)
    up.scripts["primary"] = [asyncio.CancelledError(), ANSWER]

    with pytest.raises(asyncio.CancelledError):
        complete(route(endpoint("primary"), endpoint("fallback")))
    primary = breaker.for_endpoint(endpoint("primary").id)
    assert primary.state == breaker.HALF_OPEN and not primary.probe_in_flight

    answer, trace = complete(route(endpoint("primary"), endpoint("fallback")))
    assert answer == ANSWER and trace.endpoint is not None and trace.endpoint.name == "primary"


def test_a_stream_that_fails_after_it_started_counts_against_its_endpoint(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock, rules: None
) -> None:
    primary = endpoint("primary")

    class CutStream:
        endpoint = primary
        ended = False

        async def next_batch(self) -> list[dict[str, Any]]:
            raise failure("stream_interrupted")

    async def open_cut_stream(
        model_name: str, ep: EndpointConfig, body: Any, **_: Any
    ) -> CutStream:
        return CutStream()

    monkeypatch.setattr(calls, "open_stream", open_cut_stream)
    trace = router.Trace()

    async def read() -> None:
        stream = await router.open_stream("m", route(primary), {}, trace)
        await stream.next_batch()

    with pytest.raises(GatewayError):
        asyncio.run(read())
    assert error_classes(trace) == [None, "stream_interrupted"]
    assert breaker.for_endpoint(primary.id).consecutive_failures == 1


# The error when nothing answered


def test_one_failed_endpoint_reports_its_own_error_unchanged(
    upstreams: Any, clock: FakeClock
) -> None:
    auth = failure("upstream_auth")
    upstreams(primary=[auth])
    answer, _ = complete(route(endpoint("primary")))

    assert answer is auth


def test_when_every_endpoint_fails_the_error_covers_each_and_is_the_last_ones_kind(
    upstreams: Any, clock: FakeClock
) -> None:
    upstreams(
        a=[GatewayError("upstream_server_error", "a said 500.", upstream_status=500)],
        b=[GatewayError("connection_refused", "b refused.")],
        c=[GatewayError("upstream_auth", "c said 401.", upstream_status=401)],
    )
    answer, trace = complete(route(endpoint("a"), endpoint("b"), endpoint("c")))

    assert isinstance(answer, GatewayError)
    assert (answer.error_class, answer.status, answer.upstream_status) == (
        "upstream_auth", 502, 401
    )  # fmt: skip
    assert answer.message == (
        "All 3 endpoints failed. a said 500. Then: b refused. Then: c said 401."
    )
    tips = answer.tips
    assert tips[: len(KINDS["upstream_auth"].tips)] == list(KINDS["upstream_auth"].tips)
    for earlier in ("upstream_server_error", "connection_refused"):
        assert set(KINDS[earlier].tips) <= set(tips), "the earlier failures' tips too"
    assert len(tips) == len(set(tips)), "each tip once"
    assert [a.endpoint for a in trace.attempts] == ["a", "b", "c"] and trace.fallbacks == 2


def test_when_every_endpoint_fails_the_last_retry_after_is_kept(
    upstreams: Any, clock: FakeClock
) -> None:
    upstreams(
        a=[failure("upstream_server_error")],
        b=[failure("upstream_rate_limited", retry_after_s=60)],  # beyond the cap: no retry
    )
    answer, _ = complete(route(endpoint("a"), endpoint("b", max_retries=2)))

    assert isinstance(answer, GatewayError)
    assert (answer.error_class, answer.retry_after_s) == ("upstream_rate_limited", 60)


# The worst case a caller may wait for (coalesced followers wait this long)


def test_worst_case_bounds_a_request_that_fails_everywhere_as_slowly_as_it_may(
    upstreams: Any, clock: FakeClock, settings: Any
) -> None:
    settings.BREAKER_FAILURE_THRESHOLD = 10**6
    up = upstreams(
        a=[failure("upstream_rate_limited", retry_after_s=10.0)],  # the longest wait allowed
        b=[failure("first_byte_timeout")],
    )
    up.on_call = lambda ep, budget_s: clock.advance(budget_s / 3)  # slow, but not stuck
    chain = route(endpoint("a", max_retries=2, total_timeout_s=30),
                  endpoint("b", max_retries=1, total_timeout_s=20))  # fmt: skip
    started = clock.monotonic()

    answer, _ = complete(chain)

    assert isinstance(answer, GatewayError)
    assert clock.monotonic() - started <= router.worst_case_s(chain) == 50
