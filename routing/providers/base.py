"""What a provider kind must do: speak the OpenAI chat format to BeastMode's router."""

from dataclasses import dataclass
from typing import Any, Protocol

from routing.registry import EndpointConfig


@dataclass(frozen=True)
class UpstreamRequest:
    url: str
    headers: dict[str, str]
    body: bytes


class InvalidUpstreamResponse(ValueError):
    """The upstream answered 2xx with something that is not a valid completion."""


class Provider(Protocol):
    def chat_request(
        self, endpoint: EndpointConfig, body: dict[str, Any], *, stream: bool
    ) -> UpstreamRequest:
        """The HTTP request for an OpenAI-format chat body (model name already resolved)."""

    def parse_completion(self, payload: bytes) -> dict[str, Any]:
        """An OpenAI chat.completion dict; raises InvalidUpstreamResponse."""

    def parse_stream_event(self, data: bytes) -> dict[str, Any] | None:
        """One SSE `data:` payload as an OpenAI chat.completion.chunk dict; None = end of
        stream. Raises InvalidUpstreamResponse."""

    def error_message(self, payload: bytes) -> str:
        """The human message inside an upstream error body, or ''."""
