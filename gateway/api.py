"""The OpenAI-compatible REST API as a bare ASGI app (routed in beastmode/asgi.py).

No Django view, no ORM query and no thread hop on the hot path: keys and routes come
from the in-process registry, records leave through the batching recorder.
Served under /v1/... and the bare paths (/chat/completions, /models, /jobs/<id>).
"""

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import DatabaseError

from beastmode.lib.chat_request import model_named_in, parse_chat_request
from beastmode.lib.errors import GatewayError
from cache import flights
from gateway import answer, jobs, limits, tasks
from gateway.answer import Headers
from gateway.asgi_http import (
    SSE_HEADERS,
    ClientDisconnected,
    Receive,
    Scope,
    Send,
    error_headers,
    header,
    read_body,
    send_json,
)
from gateway.exchange import Exchange, new_request_id
from routing import registry, router

T = TypeVar("T")

log = logging.getLogger(__name__)

API_PATHS = ("/v1/", "/chat/completions", "/models", "/jobs/")
# Every method some API path takes; any other is a 405 on every API path.
API_METHODS = ("GET", "POST")


def is_api_path(path: str) -> bool:
    return path.startswith(API_PATHS)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    request_id = new_request_id(header(scope, b"x-request-id"))
    exchange = Exchange(request_id=request_id, method=scope["method"], path=scope["path"])
    base_headers = [(b"x-request-id", request_id.encode())]
    path = scope["path"].removeprefix("/v1")
    try:
        if scope["method"] not in API_METHODS:
            raise _method_not_allowed(scope, "GET or POST")
        if path == "/chat/completions":
            _require_method(scope, "POST")
            await _chat_completions(scope, receive, send, exchange, base_headers)
        elif path == "/models":
            _require_method(scope, "GET")
            await _list_models(scope, send, exchange, base_headers)
        elif path == "/key/info":
            _require_method(scope, "GET")
            await _key_info(scope, send, exchange, base_headers)
        elif path.startswith("/jobs/"):
            _require_method(scope, "GET")
            await _get_job(scope, send, exchange, base_headers, path.removeprefix("/jobs/"))
        else:
            raise GatewayError("path_not_found", f"No API at {scope['path'][:200]}.")
    except GatewayError as error:
        try:
            headers = base_headers + error_headers(error)
            if error.error_class == "method_not_allowed":
                headers.append((b"allow", _allowed_methods(path).encode()))
            await send_json(send, error.status, error.to_body(), headers)
        finally:  # recorded also when the client left before the answer was sent
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
        raise _method_not_allowed(scope, method)


def _method_not_allowed(scope: Scope, allowed: str) -> GatewayError:
    return GatewayError(
        "method_not_allowed",
        f"{scope['path'][:200]} accepts {allowed}, not {scope['method'][:40]}.",
    )


def _allowed_methods(path: str) -> str:
    if path == "/chat/completions":
        return "POST"
    if path in ("/models", "/key/info") or path.startswith("/jobs/"):
        return "GET"
    return ", ".join(API_METHODS)


async def _chat_completions(
    scope: Scope, receive: Receive, send: Send, exchange: Exchange, base_headers: Headers
) -> None:
    snapshot = registry.current()
    exchange.key = snapshot.authenticate(header(scope, b"authorization"))
    raw = await read_body(scope, receive, settings.MAX_BODY_BYTES)
    try:
        chat = parse_chat_request(raw, max_depth=settings.MAX_JSON_DEPTH)
    except GatewayError:
        exchange.model = model_named_in(raw)  # the record keeps it (escaped)
        raise
    exchange.model, exchange.stream = chat.model, chat.stream
    question = answer.Question(
        key=exchange.key,
        route=snapshot.resolve(exchange.key, chat.model),
        chat=chat,
        cache_control=header(scope, b"cache-control"),
    )
    if exchange.key.limits is not None:
        lease_s = router.worst_case_s(question.route) + flights.GRACE_S
        exchange.usage = await limits.admit(
            exchange.key, chat.model, chat, exchange.request_id, lease_s
        )
        base_headers += exchange.usage.headers if exchange.usage else []
    if (header(scope, b"x-beastmode-async") or "").lower() == "true":
        if exchange.usage is not None and exchange.usage.upstream_refusal is not None:
            raise exchange.usage.upstream_refusal  # a job that could not run is refused now
        await _submit_job(send, exchange, question, base_headers)
        return
    sink = _SseSink(send, base_headers) if chat.stream else None
    reply = await answer.answer(exchange, question, sink)
    if reply.completion is not None:
        await send_json(send, 200, reply.completion, [*base_headers, *reply.headers])


async def _submit_job(
    send: Send, exchange: Exchange, question: answer.Question, base_headers: Headers
) -> None:
    """Queue the request for a worker (the answer service runs it there); 202 with its id."""
    assert exchange.key is not None
    answer.cache_plan(question)  # bad cache controls are refused now, not in the worker
    abandoned = threading.Event()  # the job is deleted if it is stored or sent after the 503
    try:
        job_id = await _in_thread(
            tasks.store_job,
            wait_s=settings.API_DATABASE_WAIT_S,
            service_key_id=exchange.key.id,
            request_id=exchange.request_id,
            chat=question.chat,
            cache_control=question.cache_control,
            abandoned=abandoned,
        )
        await _in_thread(
            tasks.send_job, wait_s=settings.API_QUEUE_WAIT_S, service="queue",
            job_id=job_id, abandoned=abandoned,
        )  # fmt: skip
    except GatewayError:
        abandoned.set()
        raise
    exchange.is_async_job = True
    payload = {"id": job_id, "object": "beastmode.job", "status": "queued"}
    await send_json(send, 202, payload, base_headers)
    exchange.finish(status=202, outcome="accepted")


async def _in_thread(
    function: Callable[..., T], *, wait_s: float, service: str = "database", **kwargs: Any
) -> T:
    """`function` on a thread of its own (connections too old or broken by a restart are
    dropped before and after, as in Django's request cycle; not the one shared thread,
    where calls waiting for a database that is down queued behind each other for 14 s). A
    database that fails, or a `service` (the database, the queue) that does not answer
    within `wait_s`, is a 503, not a wait or a 500."""
    try:
        async with asyncio.timeout(wait_s):
            return await database_sync_to_async(function, thread_sensitive=False)(**kwargs)
    except TimeoutError:
        raise GatewayError(
            f"{service}_unavailable", f"The {service} did not answer in time."
        ) from None
    except DatabaseError as exc:
        raise GatewayError(
            "database_unavailable", f"The database is unavailable ({type(exc).__name__})."
        ) from None


class _SseSink:
    """A streamed answer as server-sent events on this ASGI connection."""

    def __init__(self, send: Send, base_headers: Headers) -> None:
        self._send, self._base_headers = send, base_headers

    async def start(self, headers: Headers) -> None:
        await self._send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*SSE_HEADERS, *self._base_headers, *headers],
            }
        )

    async def write(self, body: bytes, *, more: bool) -> None:
        try:
            await self._send({"type": "http.response.body", "body": body, "more_body": more})
        except OSError:
            raise ClientDisconnected() from None


async def _list_models(scope: Scope, send: Send, exchange: Exchange, base_headers: Headers) -> None:
    snapshot = registry.current()
    exchange.key = snapshot.authenticate(header(scope, b"authorization"))
    data: list[dict[str, Any]] = [
        {"id": name, "object": "model", "created": 0, "owned_by": "beastmode"}
        for name in snapshot.models_for(exchange.key)
    ]
    await send_json(send, 200, {"object": "list", "data": data}, base_headers)
    exchange.finish(status=200)


async def _key_info(scope: Scope, send: Send, exchange: Exchange, base_headers: Headers) -> None:
    """The calling key's limits, what is left of them, its spend and when it resets."""
    exchange.key = registry.current().authenticate(header(scope, b"authorization"))
    await send_json(send, 200, await limits.key_info(exchange.key), base_headers)
    exchange.finish(status=200)


async def _get_job(
    scope: Scope, send: Send, exchange: Exchange, base_headers: Headers, job_id: str
) -> None:
    exchange.key = registry.current().authenticate(header(scope, b"authorization"))
    if not jobs.is_job_id(job_id):
        raise jobs.job_not_found(job_id)
    view = await _in_thread(
        jobs.view_for,
        wait_s=settings.API_DATABASE_WAIT_S,
        job_id=job_id,
        service_key_id=exchange.key.id,
    )
    await send_json(send, 200, view, base_headers)
    exchange.finish(status=200)
