"""One HTTP attempt against one endpoint, through the pooled client (routing.http_client).

Timeouts: connect (the TCP and TLS handshake), first byte (response headers, or the first
stream event), total (the whole answer). Every failure leaves as a classified GatewayError.
"""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from routing import diagnosis, http_client, providers
from routing.errors import GatewayError
from routing.providers.base import InvalidUpstreamResponse, UpstreamRequest
from routing.registry import EndpointConfig

_MAX_ERROR_BODY_BYTES = 64 * 1024


async def close_connections() -> None:
    """Close this event loop's pooled upstream connections (before the loop ends)."""
    http_client.close_connections()


async def fetch_completion(
    model_name: str, endpoint: EndpointConfig, body: dict[str, Any]
) -> dict[str, Any]:
    provider = providers.for_kind(endpoint.provider)
    request = provider.chat_request(endpoint, body, stream=False)
    loop = asyncio.get_running_loop()
    total_deadline = loop.time() + endpoint.total_timeout_s
    first_byte_deadline = min(loop.time() + endpoint.first_byte_timeout_s, total_deadline)
    phase = "first_byte"
    try:
        async with asyncio.timeout_at(first_byte_deadline) as deadline:
            response = await _post(endpoint, request)
            phase = "total"
            deadline.reschedule(total_deadline)
            try:
                payload = await response.read()
            finally:
                response.close()
    except Exception as exc:
        raise diagnosis.from_exception(
            model_name=model_name, endpoint=endpoint, exc=exc, phase=phase
        ) from None
    if not 200 <= response.status < 300:
        raise diagnosis.from_status(
            model_name=model_name,
            endpoint=endpoint,
            status=response.status,
            upstream_message=provider.error_message(payload[:_MAX_ERROR_BODY_BYTES]),
            retry_after_s=diagnosis.retry_after_s(response.headers),
        )
    try:
        return provider.parse_completion(payload)
    except InvalidUpstreamResponse as exc:
        raise diagnosis.invalid_response(
            model_name=model_name, endpoint=endpoint, why=str(exc)
        ) from None


@dataclass
class UpstreamStream:
    """An upstream stream whose first event has arrived; iterate for the rest."""

    endpoint: EndpointConfig
    first_chunk: dict[str, Any]
    _events: AsyncIterator[dict[str, Any]]
    _response: http_client.Response = field(repr=False)

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._events

    def close(self) -> None:
        self._response.close()


async def open_stream(
    model_name: str, endpoint: EndpointConfig, body: dict[str, Any]
) -> UpstreamStream:
    provider = providers.for_kind(endpoint.provider)
    request = provider.chat_request(endpoint, body, stream=True)
    loop = asyncio.get_running_loop()
    total_deadline = loop.time() + endpoint.total_timeout_s
    first_byte_deadline = min(loop.time() + endpoint.first_byte_timeout_s, total_deadline)
    response: http_client.Response | None = None
    try:
        async with asyncio.timeout_at(first_byte_deadline):
            response = await _post(endpoint, request)
            if not 200 <= response.status < 300:
                payload = await response.read(limit=_MAX_ERROR_BODY_BYTES)
                response.close()
                raise diagnosis.from_status(
                    model_name=model_name,
                    endpoint=endpoint,
                    status=response.status,
                    upstream_message=provider.error_message(payload),
                    retry_after_s=diagnosis.retry_after_s(response.headers),
                )
            events = _stream_events(model_name, endpoint, response, total_deadline)
            first_chunk = await anext(events, None)
    except GatewayError:
        raise
    except Exception as exc:
        if response is not None:
            response.close()
        raise diagnosis.from_exception(
            model_name=model_name, endpoint=endpoint, exc=exc, phase="first_byte"
        ) from None
    if first_chunk is None:
        response.close()
        raise diagnosis.invalid_response(
            model_name=model_name, endpoint=endpoint, why="the stream ended before any chunk"
        )
    return UpstreamStream(endpoint, first_chunk, events, response)


async def _stream_events(
    model_name: str,
    endpoint: EndpointConfig,
    response: http_client.Response,
    total_deadline: float,
) -> AsyncIterator[dict[str, Any]]:
    """Chunks of an OpenAI SSE stream; raises GatewayError unless it ends with [DONE]."""
    provider = providers.for_kind(endpoint.provider)
    try:
        async with asyncio.timeout_at(total_deadline):
            async for line in response.lines():
                if not line.startswith(b"data:"):
                    continue  # blank separators, comments, event names
                chunk = provider.parse_stream_event(line[5:].strip())
                if chunk is None:
                    return
                yield chunk
    except InvalidUpstreamResponse as exc:
        raise diagnosis.invalid_response(
            model_name=model_name, endpoint=endpoint, why=str(exc)
        ) from None
    except (TimeoutError, OSError, http_client.MalformedResponse) as exc:
        if isinstance(exc, TimeoutError):
            raise diagnosis.from_exception(
                model_name=model_name, endpoint=endpoint, exc=exc, phase="total"
            ) from None
    finally:
        response.close()
    raise GatewayError(
        "stream_interrupted",
        f"Model '{model_name}': endpoint {endpoint.label} cut the stream before it finished.",
    )


async def _post(endpoint: EndpointConfig, request: UpstreamRequest) -> http_client.Response:
    return await http_client.post(
        request.url, request.headers, request.body, connect_timeout_s=endpoint.connect_timeout_s
    )
