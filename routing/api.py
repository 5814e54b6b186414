"""The OpenAI-compatible REST API as a bare ASGI app (routed in beastmode/asgi.py).

No Django view, no ORM query and no thread hop on the hot path: keys and routes come
from the in-process registry, records leave through the batching recorder.
Served under /v1/... and the bare paths (/chat/completions, /models, /jobs/<id>).
"""

import asyncio
import contextlib
import logging
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings

from cache import flights, streams
from cache import service as cache_service
from cache.tiers import Entry
from routing import jobs, registry, router
from routing.asgi_http import (
    SSE_HEADERS,
    ClientDisconnected,
    Receive,
    Scope,
    Send,
    error_headers,
    header,
    read_body,
    send_json,
    sse_event,
)
from routing.errors import GatewayError
from routing.exchange import CacheOutcome, Exchange, new_request_id
from routing.validation import ChatRequest, parse_chat_request

log = logging.getLogger(__name__)

API_PATHS = ("/v1/", "/chat/completions", "/models", "/jobs/")


def is_api_path(path: str) -> bool:
    return path.startswith(API_PATHS)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    request_id = new_request_id(header(scope, b"x-request-id"))
    exchange = Exchange(request_id=request_id, method=scope["method"], path=scope["path"])
    base_headers = [(b"x-request-id", request_id.encode())]
    path = scope["path"].removeprefix("/v1")
    try:
        if path == "/chat/completions":
            _require_method(scope, "POST")
            await _chat_completions(scope, receive, send, exchange, base_headers)
        elif path == "/models":
            _require_method(scope, "GET")
            await _list_models(scope, send, exchange, base_headers)
        elif path.startswith("/jobs/"):
            _require_method(scope, "GET")
            await _get_job(scope, send, exchange, base_headers, path.removeprefix("/jobs/"))
        else:
            raise GatewayError("path_not_found", f"No API at {scope['path']}.")
    except GatewayError as error:
        await send_json(send, error.status, error.to_body(), base_headers + error_headers(error))
        exchange.finish(status=error.status, error=error)
    except ClientDisconnected:
        exchange.finish(status=499, outcome="client_disconnected")
    except asyncio.CancelledError:
        # daphne cancels a request whose client left (application_close_timeout later):
        # it still gets its record.
        exchange.finish(status=499, outcome="client_disconnected")
        raise
    except Exception:
        log.exception("unhandled error in request %s", request_id)
        error = GatewayError("internal_error", f"Internal error (request {request_id}).")
        exchange.finish(status=500, error=error)
        # If the response had already started this fails; the record says what happened.
        with contextlib.suppress(Exception):
            await send_json(send, 500, error.to_body(), base_headers)


def _require_method(scope: Scope, method: str) -> None:
    if scope["method"] != method:
        raise GatewayError(
            "method_not_allowed", f"{scope['path']} accepts {method}, not {scope['method']}."
        )


async def _chat_completions(
    scope: Scope, receive: Receive, send: Send, exchange: Exchange, base_headers: list
) -> None:
    snapshot = registry.current()
    exchange.key = snapshot.authenticate(header(scope, b"authorization"))
    raw = await read_body(scope, receive, settings.MAX_BODY_BYTES)
    chat = parse_chat_request(raw)
    exchange.model, exchange.stream = chat.model, chat.stream
    route = snapshot.resolve(exchange.key, chat.model)
    plan = cache_service.plan(
        exchange.key, route, chat, header(scope, b"cache-control"), exchange.request_id
    )

    if (header(scope, b"x-beastmode-async") or "").lower() == "true":
        job_id = await sync_to_async(jobs.submit)(
            service_key_id=exchange.key.id,
            request_id=exchange.request_id,
            chat=chat,
            cache_control=header(scope, b"cache-control"),
        )
        exchange.is_async_job = True
        payload = {"id": job_id, "object": "beastmode.job", "status": "queued"}
        await send_json(send, 202, payload, base_headers)
        exchange.finish(status=202, outcome="accepted")
        return

    leader: cache_service.CachePlan | None = None  # the plan, when this request leads
    if plan is not None:
        answer = await _cached_answer(plan, route)
        if isinstance(answer, cache_service.Hit):
            await _send_hit(send, exchange, chat, route, answer, base_headers)
            return
        leader = plan if answer else None
    try:
        if plan is not None:
            exchange.cache = CacheOutcome.of_miss(plan.shadow)
            base_headers = [*base_headers, (b"x-beastmode-cache", b"miss")]
        if chat.stream:
            shared = await _stream_completion(send, exchange, chat, route, plan, base_headers)
            if leader is not None:
                flights.land(leader, shared)
            return
        completion = await router.complete(chat.model, route, chat.body, exchange.trace)
        exchange.add_usage(completion.get("usage"))
        if plan is not None and exchange.trace.endpoint is not None:
            entry = cache_service.store(plan, completion, exchange.trace.endpoint.name)
            _note_stored(exchange, entry)
            if leader is not None:
                name = exchange.trace.endpoint.name
                flights.land(leader, flights.shared_answer(leader, completion, name, entry))
        await send_json(send, 200, completion, base_headers)
        exchange.finish(status=200)
    finally:
        if leader is not None:
            flights.land(leader, None)  # no answer (an error, cancelled): the next one leads


async def _cached_answer(
    plan: cache_service.CachePlan, route: registry.RouteConfig
) -> cache_service.Hit | bool:
    """A hit, or the answer of an identical request already on its way upstream; else
    whether this request leads the call upstream (flights.py)."""
    if plan.read and (hit := await cache_service.lookup(plan)):
        return hit
    return await flights.follow_or_lead(plan, route)


async def _send_hit(
    send: Send,
    exchange: Exchange,
    chat: ChatRequest,
    route: registry.RouteConfig,
    hit: cache_service.Hit,
    base_headers: list,
) -> None:
    exchange.cache = CacheOutcome.of_hit(hit, route)
    headers = [*base_headers, *exchange.cache.headers()]
    if not chat.stream:
        await send_json(send, 200, hit.entry.response, headers)
    else:
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + headers})
        events = streams.replay(hit.entry.response, include_usage=chat.include_usage)
        for event in events[:-1]:
            await _send_body(send, event, more=True)
        await _send_body(send, events[-1], more=False)
    exchange.finish(status=200)


async def _stream_completion(
    send: Send,
    exchange: Exchange,
    chat: ChatRequest,
    route: registry.RouteConfig,
    plan: cache_service.CachePlan | None,
    base_headers: list,
) -> cache_service.Hit | None:
    """Relay the stream; returns the answer for identical requests waiting (the cache
    entry is stored after the terminal event), None when the stream did not end well.

    The chunks that arrived from upstream together leave together, in one write; the
    last ones leave with `[DONE]`.
    """
    # Until the first chunk arrives nothing is sent, so the router may still fall back.
    stream = await router.open_stream(chat.model, route, chat.body, exchange.trace)
    await send(
        {"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + base_headers}
    )
    assembled = streams.StreamAssembler()
    try:
        while True:
            events = _client_events(await stream.next_batch(), exchange, chat, assembled)
            if stream.ended:
                break
            if events:
                await _send_body(send, events, more=True)
    except GatewayError as error:
        # The 200 is already out: tell the client in-band, as the OpenAI SDK expects.
        await _send_body(send, sse_event(error.to_body()), more=False)
        exchange.finish(status=200, outcome="upstream_error", error=error)
        return None
    except ClientDisconnected:
        exchange.finish(status=200, outcome="client_disconnected")
        return None
    finally:
        stream.close()
    shared = None
    if plan is not None and exchange.trace.endpoint is not None and assembled.lossless:
        completion, endpoint_name = assembled.completion(), exchange.trace.endpoint.name
        entry = cache_service.store(plan, completion, endpoint_name)
        _note_stored(exchange, entry)
        shared = flights.shared_answer(plan, completion, endpoint_name, entry)
    await _send_body(send, events + b"data: [DONE]\n\n", more=False)
    exchange.finish(status=200)
    return shared


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


def _note_stored(exchange: Exchange, entry: Entry | None) -> None:
    """A miss record names the entry it created: warming counts requests per entry."""
    if entry is not None and exchange.cache is not None:
        exchange.cache.entry_key = entry.key


async def _send_body(send: Send, body: bytes, *, more: bool) -> None:
    try:
        await send({"type": "http.response.body", "body": body, "more_body": more})
    except OSError:
        raise ClientDisconnected() from None


async def _list_models(scope: Scope, send: Send, exchange: Exchange, base_headers: list) -> None:
    snapshot = registry.current()
    exchange.key = snapshot.authenticate(header(scope, b"authorization"))
    data: list[dict[str, Any]] = [
        {"id": name, "object": "model", "created": 0, "owned_by": "beastmode"}
        for name in snapshot.models_for(exchange.key)
    ]
    await send_json(send, 200, {"object": "list", "data": data}, base_headers)
    exchange.finish(status=200)


async def _get_job(
    scope: Scope, send: Send, exchange: Exchange, base_headers: list, job_id: str
) -> None:
    exchange.key = registry.current().authenticate(header(scope, b"authorization"))
    view = await sync_to_async(jobs.view_for)(job_id=job_id, service_key_id=exchange.key.id)
    await send_json(send, 200, view, base_headers)
    exchange.finish(status=200)
