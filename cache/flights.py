"""Identical concurrent misses share one upstream call.

The first request of a key leads: it calls upstream while identical requests follow,
waiting for its answer. Whatever 200 answer the leader gets is the followers' answer too,
stored or not (an answer cut short by `max_tokens` is still the answer to the identical
request). When the leader fails (an upstream error, its client gone, its task
cancelled), the first follower to wake leads the next try and the others wait for it:
calls to a struggling upstream are made one after another, never all at once.

A follower waits for a leader at most as long as that leader's call may take (`budget_s`:
its route's timeouts, retries and backoff); past that the leader is stuck and the follower
calls upstream on its own. Requests with `no-store` neither lead nor share their answer;
`no-cache` requests do not follow.

Across processes and nodes the same holds through Redis: a process's leader claims the key
(cache/shared_flights.py) and leads only if no other process leads it; otherwise it
follows that leader, for itself and its own followers. With Redis away, each process
leads its own flights.
"""

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from cache import shared_flights
from cache.layers import is_purged, tiers
from cache.service import CachePlan, Hit, entry_for, in_io_thread, is_fresh, submit_io
from cache.tiers import Entry

# What callers add to a route's worst case: scheduling, the leader's bookkeeping.
GRACE_S = 1.0


class Flight:
    """One request's part in a flight: `answer` when it followed a leader that answered;
    `leads` when it calls upstream for the identical requests that follow it."""

    def __init__(self, plan: CachePlan | None) -> None:
        self.plan = plan
        self.answer: Hit | None = None
        self.leads = False
        self._future: asyncio.Future[Hit | None] | None = None
        self._claim = ""  # the token of this flight's claim in Redis while it holds one

    def share(self, completion: dict[str, Any], endpoint_name: str, stored: Entry | None) -> None:
        """Give the followers this request's answer (now, not when the flight ends)."""
        if self.leads and self.plan is not None:
            answer = shared_answer(self.plan, completion, endpoint_name, stored)
            if self._claim:
                key, token, self._claim = self.plan.key.exact, self._claim, ""
                submit_io(shared_flights.land, key, token, answer.entry, stored is not None)
            self._land(answer)

    def _drop_claim(self) -> None:
        if self._claim and self.plan is not None:
            submit_io(shared_flights.drop, self.plan.key.exact, self._claim)
            self._claim = ""

    def _land(self, answer: Hit | None) -> None:
        """End this request's flight (only its own: another may lead the key by now)."""
        if self._future is None or self.plan is None:
            return
        if _flights.get(self.plan.key.exact) is self._future:
            del _flights[self.plan.key.exact]
        if not self._future.done():
            self._future.set_result(answer)
        self._future = None


# exact key → the future the leader's followers wait on
_flights: dict[str, asyncio.Future[Hit | None]] = {}


@contextlib.asynccontextmanager
async def coalesce(plan: CachePlan | None, *, budget_s: float) -> AsyncIterator[Flight]:
    """Follow an identical request in flight, or lead one. Leaving the block always ends
    a led flight: with the shared answer, else with none (the followers elect another)."""
    flight = Flight(plan)
    try:
        if plan is not None:
            await _follow_or_lead(flight, plan, budget_s)
        yield flight
    finally:
        flight._drop_claim()
        flight._land(None)


async def _follow_or_lead(flight: Flight, plan: CachePlan, wait_s: float) -> None:
    key = plan.key.exact
    while plan.read and (future := _flights.get(key)) is not None:
        try:
            async with asyncio.timeout(wait_s):
                # Shielded: a follower cancelled (its client gone) or timing out must not
                # cancel the answer the others wait for.
                answer = await asyncio.shield(future)
        except TimeoutError:
            return  # the leader is stuck: call upstream alone
        if answer is not None:
            flight.answer = answer
            return
        # The leader failed. The first follower to wake finds no flight and leads (no
        # await between here and the lead below); those after it find its flight and wait.
    if plan.store and key not in _flights:
        flight._future = _flights[key] = asyncio.get_running_loop().create_future()
        flight.leads = True
        if plan.read and tiers().l2.available:
            await _follow_or_lead_cluster(flight, plan, wait_s)


async def _follow_or_lead_cluster(flight: Flight, plan: CachePlan, wait_s: float) -> None:
    """As this process's leader: lead the key's flight in the cluster, or follow the
    process that leads it (at most `wait_s`) and give its answer to this process."""
    key, token = plan.key.exact, secrets.token_hex(8)
    deadline = time.monotonic() + wait_s
    pause, leader = shared_flights.FIRST_POLL_S, ""
    while True:
        # Held before it is known: a request cancelled while its claim is on the way still
        # drops the claim on leaving (drop only deletes a claim with this token).
        flight._claim = token
        claim = await in_io_thread(shared_flights.claim, key, token, wait_s, leader)
        if claim.leads:
            return
        flight._claim = ""
        if claim.answer is not None:
            entry, stored = claim.answer
            if is_purged(entry) or not is_fresh(entry, plan, time.time()):
                return  # purged or expired since it landed: ask upstream
            answer = Hit(entry, "exact", "L2" if stored else "")
            flight._land(answer)
            flight.answer, flight.leads = answer, False
            return
        if claim.alone or time.monotonic() + pause > deadline:
            return  # no Redis, or the leader elsewhere is stuck: call upstream alone
        leader = claim.leader
        await asyncio.sleep(pause)
        pause = min(pause * 2, shared_flights.MAX_POLL_S)


def shared_answer(
    plan: CachePlan, completion: dict[str, Any], endpoint_name: str, stored: Entry | None
) -> Hit:
    """The leader's answer as its followers are served it: an exact hit, in L1 when the
    answer was stored, of no tier when it was not."""
    if stored is not None:
        return Hit(stored, "exact", "L1")
    return Hit(entry_for(plan, completion, endpoint_name, time.time()), "exact", "")
