"""One HTTP attempt against one endpoint, through the pooled client (routing.http_client).

Timeouts: connect (the TCP and TLS handshake), first byte (response headers, or the first
stream event), total (the whole answer; the router makes it bound all of an endpoint's
attempts). Every failure leaves as a classified GatewayError.
"""

import asyncio
from typing import Any

from beastmode.lib.errors import GatewayError
from routing import diagnosis, http_client, providers
from routing.providers.base import InvalidUpstreamResponse, UpstreamRequest
from routing.registry import EndpointConfig

_MAX_ERROR_BODY_BYTES = 64 * 1024


async def close_connections() -> None:
    """Close this event loop's pooled upstream connections (before the loop ends)."""
    http_client.close_connections()


async def fetch_completion(
    model_name: str,
    endpoint: EndpointConfig,
    body: dict[str, Any],
    *,
    budget_s: float | None = None,
) -> dict[str, Any]:
    """The endpoint's completion within `budget_s` (what the router has left of the
    endpoint's total timeout; the whole of it by default)."""
    provider = providers.for_kind(endpoint.provider)
    request = provider.chat_request(endpoint, body, stream=False)
    loop = asyncio.get_running_loop()
    total_deadline = loop.time() + _total_s(endpoint, budget_s)
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


class UpstreamStream:
    """An upstream SSE stream, read in batches: the chunks that arrived together."""

    def __init__(
        self,
        model_name: str,
        endpoint: EndpointConfig,
        response: http_client.Response,
        total_deadline: float,
    ) -> None:
        self.endpoint = endpoint
        self.ended = False  # the upstream sent [DONE]: the batch in hand is the last
        self._model_name = model_name
        self._provider = providers.for_kind(endpoint.provider)
        self._response = response
        self._total_deadline = total_deadline
        self._ready: list[dict[str, Any]] = []
        self._failure: GatewayError | None = None  # raised once the chunks before it are out

    async def start(self) -> None:
        """Wait for the first chunks (GatewayError if the stream ends before any, or if
        what came with them already failed: nothing has reached the client, so the router
        may still fall back)."""
        await self._fill()
        if self._failure is not None:
            raise self._failure
        if not self._ready:
            raise diagnosis.invalid_response(
                model_name=self._model_name,
                endpoint=self.endpoint,
                why="the stream ended before any chunk",
            )

    async def next_batch(self) -> list[dict[str, Any]]:
        """The next chunks, at least one, as soon as they arrive; [] after [DONE].

        Raises GatewayError when the stream times out, is cut before [DONE] or sends
        something that is not a chunk.
        """
        if not self._ready and not self.ended:
            await self._fill()
        batch, self._ready = self._ready, []
        return batch

    def close(self) -> None:
        self._response.close()

    async def _fill(self) -> None:
        while not self._ready and not self.ended:
            if self._failure is not None:
                raise self._failure
            try:
                async with asyncio.timeout_at(self._total_deadline):
                    lines = await self._response.next_lines()
            except TimeoutError as exc:
                raise diagnosis.from_exception(
                    model_name=self._model_name, endpoint=self.endpoint, exc=exc, phase="total"
                ) from None
            except (OSError, http_client.MalformedResponse):
                lines = []
            if not lines:
                raise GatewayError(
                    "stream_interrupted",
                    f"Model '{self._model_name}': endpoint {self.endpoint.label} cut the "
                    "stream before it finished.",
                )
            self._parse(lines)
        if self.ended:
            self._response.close()  # hands the connection back to the pool

    def _parse(self, lines: list[bytes]) -> None:
        for line in lines:
            if not line.startswith(b"data:"):
                continue  # blank separators, comments, event names
            try:
                chunk = self._provider.parse_stream_event(line[5:].strip())
            except InvalidUpstreamResponse as exc:
                self._failure = diagnosis.invalid_response(
                    model_name=self._model_name, endpoint=self.endpoint, why=str(exc)
                )
                return
            if chunk is None:
                self.ended = True
                return
            self._ready.append(chunk)


async def open_stream(
    model_name: str,
    endpoint: EndpointConfig,
    body: dict[str, Any],
    *,
    budget_s: float | None = None,
) -> UpstreamStream:
    """The endpoint's stream once its first chunk has arrived (or a GatewayError); the
    whole stream must end within `budget_s` (as for fetch_completion)."""
    provider = providers.for_kind(endpoint.provider)
    request = provider.chat_request(endpoint, body, stream=True)
    loop = asyncio.get_running_loop()
    total_deadline = loop.time() + _total_s(endpoint, budget_s)
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
            stream = UpstreamStream(model_name, endpoint, response, total_deadline)
            await stream.start()
    except GatewayError:
        if response is not None:
            response.close()
        raise
    except Exception as exc:
        if response is not None:
            response.close()
        raise diagnosis.from_exception(
            model_name=model_name, endpoint=endpoint, exc=exc, phase="first_byte"
        ) from None
    return stream


def _total_s(endpoint: EndpointConfig, budget_s: float | None) -> float:
    return endpoint.total_timeout_s if budget_s is None else min(budget_s, endpoint.total_timeout_s)


async def _post(endpoint: EndpointConfig, request: UpstreamRequest) -> http_client.Response:
    return await http_client.post(
        request.url, request.headers, request.body, connect_timeout_s=endpoint.connect_timeout_s
    )
