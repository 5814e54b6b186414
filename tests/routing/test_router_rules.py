"""The router's rules on a fake clock with scripted upstreams: retries, backoff, Retry-After,
fallbacks, circuit breaking and the final error. No sockets; each test runs in milliseconds.
The same rules seen through the real server: tests/routing/test_router.py."""

import asyncio
import zlib
from typing import Any

import pytest

from beastmode.lib.errors import KINDS, GatewayError
from routing import breaker, calls, router
from routing.registry import EndpointConfig, RouteConfig
from tests.routing.conftest import FakeClock

ANSWER = {"choices": [{"index": 0, "message": {"content": "hi"}, "finish_reason": "stop"}]}
RETRYABLE = sorted(k.error_class for k in KINDS.values() if k.retryable)
NOT_RETRYABLE = sorted(
    k.error_class for k in KINDS.values() if k.endpoint_fault and not k.retryable
)


def endpoint(name: str, max_retries: int = 0, total_timeout_s: float = 5) -> EndpointConfig:
    return EndpointConfig(
        id=zlib.crc32(name.encode()), name=name, provider="openai", base_url=f"http://{name}.test/v1",
        upstream_model=f"{name}-model", api_key="", connect_timeout_s=1,
        first_byte_timeout_s=1, total_timeout_s=total_timeout_s, max_retries=max_retries,
        input_cost_per_1m=1, output_cost_per_1m=1,
    )  # fmt: skip


def failure(error_class: str, retry_after_s: float | None = None) -> GatewayError:
    return GatewayError(
        error_class, f"{error_class} happened.", retry_after_s=retry_after_s, upstream_status=599
    )


class Upstreams:
    """Scripted endpoints: each answers with its script in turn (the last entry repeats);
    an entry that is an exception is raised. `calls` lists the endpoints called, in order."""

    def __init__(self, scripts: dict[str, list[Any]]) -> None:
        self.scripts = scripts
        self.calls: list[str] = []
        self.on_call = lambda ep: None  # e.g. time passing during the call

    async def fetch_completion(
        self, model_name: str, ep: EndpointConfig, body: dict[str, Any]
    ) -> dict[str, Any]:
        self.calls.append(ep.name)
        self.on_call(ep)
        script = self.scripts[ep.name]
        outcome = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


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


def route(*endpoints: EndpointConfig) -> RouteConfig:
    return RouteConfig(model_name="m", endpoints=endpoints)


def complete(chain: RouteConfig) -> tuple[dict[str, Any] | GatewayError, router.Trace]:
    """The router's answer (or the error it raised) and its trace for one request."""
    trace = router.Trace()

    async def request() -> dict[str, Any] | GatewayError:
        try:
            return await router.complete(chain.model_name, chain, {"messages": []}, trace)
        except GatewayError as error:
            return error

    return asyncio.run(request()), trace


def error_classes(trace: router.Trace) -> list[str | None]:
    return [a.error_class for a in trace.attempts]


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

    async def slow_primary(model_name: str, ep: EndpointConfig, body: Any) -> Any:
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

    async def open_cut_stream(model_name: str, ep: EndpointConfig, body: Any) -> CutStream:
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
    up.on_call = lambda ep: clock.advance(ep.total_timeout_s)  # each attempt takes it all
    chain = route(endpoint("a", max_retries=2, total_timeout_s=7), endpoint("b", max_retries=1))
    started = clock.monotonic()

    answer, _ = complete(chain)

    assert isinstance(answer, GatewayError)
    elapsed = clock.monotonic() - started
    assert elapsed <= router.worst_case_s(chain)
    assert elapsed == pytest.approx(3 * 7 + 2 * 10 + 2 * 5 + clock.sleeps[-1])  # b: jittered
