"""The one way a chat request is answered, for the API, async jobs and warming alike.

plan → lookup → coalesce → route → store → record: the cache is planned from the
model's policy and the caller's controls; a hit in any tier answers; else the request
follows an identical one already on its way upstream, or leads it; the router calls
upstream; a complete answer is stored for every tier and shared with the followers; the
request's record is submitted when it is answered or fails.

A streamed answer (`stream: true`) is relayed to a `StreamSink` as it arrives, since
nothing may be held back; every other answer is returned.
"""

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from asgiref.sync import sync_to_async

from beastmode.lib.chat_request import ChatRequest
from beastmode.lib.errors import GatewayError
from cache import flights, streams
from cache import service as cache_service
from gateway import limits
from gateway.asgi_http import ClientDisconnected, sse_event
from gateway.exchange import CacheOutcome, Exchange
from routing import calls, router
from routing.registry import KeyConfig, RouteConfig

Headers = list[tuple[bytes, bytes]]

DONE_EVENT = b"data: [DONE]\n\n"


class StreamSink(Protocol):
    """Where a streamed answer goes: the response starts once, then bodies follow; the
    last one has `more=False`. Raises ClientDisconnected when the client is gone."""

    async def start(self, headers: Headers) -> None: ...

    async def write(self, body: bytes, *, more: bool) -> None: ...


@dataclass(slots=True)
class Answer:
    """A completed answer: `completion` to send (None when it was streamed), the cache
    headers, and whether the answer was stored (warming reports it)."""

    completion: dict[str, Any] | None
    headers: Headers
    stored: bool = False


@dataclass(slots=True)
class Question:
    """What is asked, by whom, of which route, with the caller's cache controls."""

    key: KeyConfig
    route: RouteConfig
    chat: ChatRequest
    cache_control: str | None = None
    # Off the hot path (jobs, warming): the answer is in every tier before this returns.
    store_durably: bool = False


async def answer(exchange: Exchange, question: Question, sink: StreamSink | None = None) -> Answer:
    """Answer `question`, recording it on `exchange`. GatewayError when it cannot be
    answered (recorded too). A streamed question needs a `sink`."""
    try:
        return await _answer(exchange, question, sink)
    except GatewayError as error:
        exchange.finish(status=error.status, error=error)
        raise


def answer_blocking(exchange: Exchange, question: Question) -> Answer:
    """`answer` from synchronous code (a Celery worker, warming): in an event loop of its
    own, whose pooled upstream connections are closed before it ends."""

    async def answer_and_close() -> Answer:
        try:
            return await answer(exchange, question)
        finally:
            await calls.close_connections()
            await limits.close()

    return asyncio.run(answer_and_close())


def cache_plan(question: Question, request_id: str = "") -> cache_service.CachePlan | None:
    """How `question` uses the cache; GatewayError (400) for cache controls it refuses, so
    that an async job is refused at once, not in its worker."""
    return cache_service.plan(
        namespace=question.key.cache_namespace,
        policy=question.route.cache_policy,
        chat=question.chat,
        cache_control=question.cache_control,
        request_id=request_id,
    )


async def _answer(exchange: Exchange, question: Question, sink: StreamSink | None) -> Answer:
    chat, route = question.chat, question.route
    plan = cache_plan(question, exchange.request_id)
    if plan is not None and plan.read and (hit := await cache_service.lookup(plan)):
        return await _serve_hit(exchange, question, hit, sink)
    budget_s = router.worst_case_s(route) + flights.GRACE_S
    async with flights.coalesce(plan, budget_s=budget_s) as flight:
        if flight.answer is not None:
            return await _serve_hit(exchange, question, flight.answer, sink)
        # It calls upstream: tokens per minute and the budget (hits cost neither).
        if question.key.limits is not None:
            exchange.usage = await limits.charge(
                exchange.usage, question.key, chat.model, chat, exchange.request_id
            )
        headers: Headers = []
        if plan is not None:
            exchange.cache = CacheOutcome.of_miss(plan.shadow)
            headers.append((b"x-beastmode-cache", b"miss"))
        if chat.stream:
            assert sink is not None, "a streamed question needs a sink"
            await _relay_stream(exchange, question, plan, flight, sink, headers)
            return Answer(None, headers)
        completion = await router.complete(chat.model, route, chat.body, exchange.trace)
        exchange.add_usage(completion.get("usage"))
        stored = await _store(exchange, question, plan, completion, flight)
        exchange.finish(status=200)
        return Answer(completion, headers, stored=stored)


async def _serve_hit(
    exchange: Exchange, question: Question, hit: cache_service.Hit, sink: StreamSink | None
) -> Answer:
    exchange.cache = CacheOutcome.of_hit(hit, question.route)
    headers = exchange.cache.headers()
    if not question.chat.stream:
        exchange.finish(status=200)
        return Answer(hit.entry.response, headers)
    assert sink is not None, "a streamed question needs a sink"
    await sink.start(headers)
    events = streams.replay(hit.entry.response, include_usage=question.chat.include_usage)
    for event in events[:-1]:
        await sink.write(event, more=True)
    await sink.write(events[-1], more=False)
    exchange.finish(status=200)
    return Answer(None, headers)


async def _relay_stream(
    exchange: Exchange,
    question: Question,
    plan: cache_service.CachePlan | None,
    flight: flights.Flight,
    sink: StreamSink,
    headers: Headers,
) -> None:
    """Relay the upstream stream; store and share the answer once it ended well.

    The chunks that arrived from upstream together leave together, in one write; the last
    ones leave with `[DONE]`. A failure after the 200 went out is told in-band, as the
    OpenAI SDK expects."""
    chat = question.chat
    # Until the first chunk arrives nothing is sent, so the router may still fall back.
    stream = await router.open_stream(chat.model, question.route, chat.body, exchange.trace)
    await sink.start(headers)
    assembled = streams.StreamAssembler()
    try:
        while True:
            events = _client_events(await stream.next_batch(), exchange, chat, assembled)
            if stream.ended:
                break
            if events:
                await sink.write(events, more=True)
    except GatewayError as error:
        await sink.write(sse_event(error.to_body()), more=False)
        exchange.finish(status=200, outcome="upstream_error", error=error)
        return
    except ClientDisconnected:
        exchange.finish(status=200, outcome="client_disconnected")
        return
    finally:
        stream.close()
    if assembled.lossless:
        await _store(exchange, question, plan, assembled.completion(), flight)
    try:
        await sink.write(events + DONE_EVENT, more=False)
    except ClientDisconnected:
        exchange.finish(status=200, outcome="client_disconnected")
        return
    exchange.finish(status=200)


def _client_events(
    batch: list[dict[str, Any]],
    exchange: Exchange,
    chat: ChatRequest,
    assembled: streams.StreamAssembler,
) -> bytes:
    """The SSE events the client gets for a batch of upstream chunks (which are also
    assembled into the completion the cache stores)."""
    events = []
    for chunk in batch:
        assembled.add(chunk)
        if "usage" in chunk:
            exchange.add_usage(chunk.get("usage"))
            if not chat.include_usage:
                if not chunk["choices"]:
                    continue  # the usage-only chunk BeastMode asked for itself
                chunk = {k: v for k, v in chunk.items() if k != "usage"}
        events.append(sse_event(chunk))
    return b"".join(events)


async def _store(
    exchange: Exchange,
    question: Question,
    plan: cache_service.CachePlan | None,
    completion: dict[str, Any],
    flight: flights.Flight,
) -> bool:
    """Store a complete answer and share it with the followers; whether it was stored.
    A miss record names the entry it created: warming counts requests per entry."""
    endpoint = exchange.trace.endpoint
    if plan is None or endpoint is None:
        return False
    if question.store_durably:  # the lower tiers are written now, in a thread (the ORM)
        store = sync_to_async(cache_service.store)
        entry = await store(plan, completion, endpoint.name, wait=True)
    else:
        entry = cache_service.store(plan, completion, endpoint.name)
    if entry is not None and exchange.cache is not None:
        exchange.cache.entry_key = entry.key
    flight.share(completion, endpoint.name, entry)
    return entry is not None
