"""Identical concurrent misses share one upstream call.

The first request of a key leads: it calls upstream while identical requests follow,
waiting for its answer. Whatever 200 answer the leader gets is the followers' answer too,
stored or not (an answer cut short by `max_tokens` is still the answer to the identical
request). When the leader fails (an upstream error, its client gone, its task
cancelled), the first follower to wake leads the next try and the others wait for it:
calls to a struggling upstream are made one after another, never all at once.

A follower waits for a leader at most as long as that leader's call may take (its route's
timeouts, retries and backoff); past that the leader is stuck and the follower calls
upstream on its own. Requests with `no-store` neither lead nor share their answer;
`no-cache` requests do not follow.
"""

import asyncio
import time
from typing import Any

from django.conf import settings

from cache.service import CachePlan, Hit, entry_for
from cache.tiers import Entry
from routing.registry import RouteConfig

# Beyond the route's own worst case: scheduling, the leader's bookkeeping.
_GRACE_S = 1.0

# exact key → (the leading request's plan, the future its followers wait on)
_flights: dict[str, tuple[CachePlan, asyncio.Future[Hit | None]]] = {}


async def follow_or_lead(plan: CachePlan, route: RouteConfig) -> Hit | bool:
    """An identical in-flight request's answer; else True when this request now leads
    (it must `land` whatever happens), False when it calls upstream on its own."""
    key = plan.key.exact
    while plan.read and (flight := _flights.get(key)) is not None:
        future = flight[1]
        try:
            async with asyncio.timeout(leader_budget_s(route)):
                # Shielded: a follower cancelled (its client gone) or timing out must not
                # cancel the answer the others wait for.
                answer = await asyncio.shield(future)
        except TimeoutError:
            return False
        if answer is not None:
            return answer
        # The leader failed. The first follower to wake finds no flight and leads (no
        # await between here and `_lead`); those after it find its flight and wait.
    return _lead(plan)


def _lead(plan: CachePlan) -> bool:
    if not plan.store or plan.key.exact in _flights:
        return False
    _flights[plan.key.exact] = (plan, asyncio.get_running_loop().create_future())
    return True


def land(plan: CachePlan, answer: Hit | None) -> None:
    """End the leader's flight with its answer, or None when it has none (its followers
    then elect the next leader). Later calls do nothing, even once another request leads
    the same key."""
    flight = _flights.get(plan.key.exact)
    if flight is None or flight[0] is not plan:
        return
    del _flights[plan.key.exact]
    if not flight[1].done():
        flight[1].set_result(answer)


def shared_answer(
    plan: CachePlan, completion: dict[str, Any], endpoint_name: str, stored: Entry | None
) -> Hit:
    """The leader's answer as its followers are served it: an exact hit, in L1 when the
    answer was stored, of no tier when it was not."""
    if stored is not None:
        return Hit(stored, "exact", "L1")
    return Hit(entry_for(plan, completion, endpoint_name, time.time()), "exact", "")


def leader_budget_s(route: RouteConfig) -> float:
    """The longest a leader's call may legitimately take: every attempt on every endpoint
    at its total timeout, with the longest backoff between attempts."""
    backoff_s = max(settings.RETRY_MAX_DELAY_S, settings.RETRY_AFTER_CAP_S)
    return _GRACE_S + sum(
        (endpoint.max_retries + 1) * endpoint.total_timeout_s + endpoint.max_retries * backoff_s
        for endpoint in route.endpoints
    )
