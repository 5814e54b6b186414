"""Pick an endpoint for a request: retries with backoff, fallbacks, circuit breaking.

The router only routes. Records, caching and HTTP framing belong to the callers.
"""

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, TypeVar

from django.conf import settings

from beastmode.lib.errors import GatewayError
from routing import breaker, calls
from routing.registry import EndpointConfig, RouteConfig

T = TypeVar("T")

# How the router waits before a retry and tells the time. Tests put a fake clock here
# (tests/routing/conftest.py).
sleep = asyncio.sleep
clock = time.monotonic


@dataclass
class Attempt:
    endpoint: str
    error_class: str | None  # None = success
    upstream_status: int | None
    latency_ms: float


@dataclass
class Trace:
    """What the router did for one request, for the request record."""

    attempts: list[Attempt] = field(default_factory=list)
    endpoint: EndpointConfig | None = None  # the one that answered
    upstream_ms: float = 0.0

    @property
    def fallbacks(self) -> int:
        """How many times the router moved on to a later endpoint in the chain."""
        names = [a.endpoint for a in self.attempts]
        return sum(1 for before, after in pairwise(names) if before != after)

    def add(self, endpoint: EndpointConfig, started: float, error: GatewayError | None) -> None:
        latency_ms = (time.perf_counter() - started) * 1000
        self.upstream_ms += latency_ms
        self.attempts.append(
            Attempt(
                endpoint=endpoint.name,
                error_class=error.error_class if error else None,
                upstream_status=error.upstream_status if error else 200,
                latency_ms=round(latency_ms, 3),
            )
        )


async def complete(
    model_name: str, route: RouteConfig, body: dict[str, Any], trace: Trace
) -> dict[str, Any]:
    """A chat completion from the first endpoint that gives one; raises GatewayError."""
    return await _run(
        model_name,
        route,
        trace,
        lambda ep, budget_s: calls.fetch_completion(model_name, ep, body, budget_s=budget_s),
    )


class RoutedStream:
    """The stream of the endpoint that answered, in batches of chunks as they arrive.

    Fallback happens only until the first chunks have arrived (nothing has reached the
    client yet); a failure after that raises GatewayError from `next_batch`.
    """

    def __init__(self, stream: calls.UpstreamStream, trace: Trace) -> None:
        self._stream = stream
        self._trace = trace
        self._started = time.perf_counter()
        self._timed = False

    @property
    def ended(self) -> bool:
        """The upstream finished the stream: the last batch is in hand."""
        return self._stream.ended

    async def next_batch(self) -> list[dict[str, Any]]:
        """The next chunks ([] after the end); GatewayError if the stream fails."""
        try:
            batch = await self._stream.next_batch()
        except GatewayError as error:
            breaker.for_endpoint(self._stream.endpoint.id).record_failure(error.error_class)
            self._trace.add(self._stream.endpoint, self._started, error)
            raise
        if self._stream.ended and not self._timed:
            self._timed = True
            self._trace.upstream_ms += (time.perf_counter() - self._started) * 1000
        return batch

    def close(self) -> None:
        self._stream.close()


async def open_stream(
    model_name: str, route: RouteConfig, body: dict[str, Any], trace: Trace
) -> RoutedStream:
    """A streamed completion from the first endpoint whose stream starts."""
    stream = await _run(
        model_name,
        route,
        trace,
        lambda ep, budget_s: calls.open_stream(model_name, ep, body, budget_s=budget_s),
    )
    return RoutedStream(stream, trace)


async def _run(
    model_name: str,
    route: RouteConfig,
    trace: Trace,
    call: Callable[[EndpointConfig, float], Awaitable[T]],
) -> T:
    """Each endpoint in turn, retried as its errors allow, all its attempts and the waits
    between them within its `total_timeout_s`, and everything within the route's
    `timeout_s` (request_timeout when that runs out)."""
    failures: list[GatewayError] = []
    route_deadline = clock() + route.timeout_s if route.timeout_s else math.inf
    for endpoint in route.endpoints:
        if clock() >= route_deadline:
            raise _request_timeout(model_name, route, failures)
        endpoint_breaker = breaker.for_endpoint(endpoint.id)
        last_error: GatewayError | None = None
        deadline = min(clock() + endpoint.total_timeout_s, route_deadline)
        for attempt in range(endpoint.max_retries + 1):
            if not endpoint_breaker.allow_request():
                break
            started = time.perf_counter()
            try:
                result = await call(endpoint, deadline - clock())
            except GatewayError as error:
                trace.add(endpoint, started, error)
                if error.error_class == "upstream_bad_request":
                    endpoint_breaker.release_probe()
                    raise  # the request itself is wrong: another endpoint will not help
                endpoint_breaker.record_failure(error.error_class)
                last_error = error
                delay_s = _retry_delay_s(attempt, endpoint.max_retries, error)
                if delay_s is None or endpoint_breaker.state == breaker.OPEN:
                    break  # an open circuit would refuse the retry: no waiting for it
                if clock() + delay_s >= deadline:
                    break  # no time left for another attempt on this endpoint
                await sleep(delay_s)
                continue
            except BaseException:
                # Cancelled (client gone) or a bug: no verdict on the endpoint's health.
                endpoint_breaker.release_probe()
                raise
            trace.add(endpoint, started, None)
            trace.endpoint = endpoint
            endpoint_breaker.record_success()
            return result
        if last_error is not None:
            failures.append(last_error)
    if clock() >= route_deadline:
        raise _request_timeout(model_name, route, failures)
    raise _final_error(model_name, route, failures)


def worst_case_s(route: RouteConfig) -> float:
    """The longest a call on this route may legitimately take: every endpoint's total
    timeout (which bounds its retries and the waits between them), or the route's."""
    endpoints_s = sum(endpoint.total_timeout_s for endpoint in route.endpoints)
    return min(endpoints_s, route.timeout_s) if route.timeout_s else endpoints_s


def _request_timeout(
    model_name: str, route: RouteConfig, failures: list[GatewayError]
) -> GatewayError:
    tried = f" Last: {failures[-1].message}" if failures else ""
    return GatewayError(
        "request_timeout",
        f"Model '{model_name}': no answer within the model's timeout of {route.timeout_s:g} s"
        f" (retries and fallbacks included).{tried}",
    )


def _retry_delay_s(attempt: int, max_retries: int, error: GatewayError) -> float | None:
    """Seconds to wait before retrying the same endpoint, or None to move on."""
    if not error.kind.retryable or attempt >= max_retries:
        return None
    if error.retry_after_s is not None:
        if error.retry_after_s > settings.RETRY_AFTER_CAP_S:
            return None  # waiting that long is worse than a fallback
        return error.retry_after_s
    ceiling = min(settings.RETRY_MAX_DELAY_S, settings.RETRY_BASE_DELAY_S * 2**attempt)
    return random.uniform(ceiling / 2, ceiling)  # jitter: callers do not retry in step


def _final_error(model_name: str, route: RouteConfig, failures: list[GatewayError]) -> GatewayError:
    if not route.endpoints:
        return GatewayError(
            "no_endpoint", f"Model '{model_name}' has no enabled endpoint in its route."
        )
    if not failures:
        retry_after_s = min(breaker.for_endpoint(ep.id).retry_after_s() for ep in route.endpoints)
        return GatewayError(
            "circuit_open",
            f"Model '{model_name}': every endpoint is failing and cooling down "
            f"({', '.join(ep.label for ep in route.endpoints)}).",
            retry_after_s=max(1.0, retry_after_s),
        )
    last = failures[-1]
    if len(failures) == 1:
        return last
    other_tips = [tip for f in failures[:-1] for tip in f.tips if tip not in last.tips]
    return GatewayError(
        last.error_class,
        f"All {len(failures)} endpoints failed. " + " Then: ".join(f.message for f in failures),
        retry_after_s=last.retry_after_s,
        upstream_status=last.upstream_status,
        extra_tips=list(dict.fromkeys(other_tips)),
    )
