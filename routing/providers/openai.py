"""OpenAI-compatible upstreams (OpenAI, vLLM, Ollama, LM Studio, llama.cpp, ...)."""

import json
from typing import Any

from beastmode.lib import fastjson
from routing.providers.base import InvalidUpstreamResponse, UpstreamRequest
from routing.registry import EndpointConfig


class OpenAIProvider:
    def chat_request(
        self, endpoint: EndpointConfig, body: dict[str, Any], *, stream: bool
    ) -> UpstreamRequest:
        payload = {**body, "model": endpoint.upstream_model}
        if stream:
            # Always ask for usage so the record has token counts; the router drops the
            # usage chunk again when the client did not ask for it.
            payload["stream_options"] = {
                **(body.get("stream_options") or {}),
                "include_usage": True,
            }
        headers = {"Content-Type": "application/json"}
        if endpoint.api_key:
            headers["Authorization"] = f"Bearer {endpoint.api_key}"
        return UpstreamRequest(
            url=f"{endpoint.base_url}/chat/completions",
            headers=headers,
            body=fastjson.dumps(payload),
        )

    def parse_completion(self, payload: bytes) -> dict[str, Any]:
        data = _json_object(payload)
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            raise InvalidUpstreamResponse("the response has no 'choices'")
        return data

    def parse_stream_event(self, data: bytes) -> dict[str, Any] | None:
        if data.strip() == b"[DONE]":
            return None
        chunk = _json_object(data)
        if "error" in chunk:
            raise InvalidUpstreamResponse(f"the upstream sent an error event: {chunk['error']}")
        if not isinstance(chunk.get("choices"), list):
            raise InvalidUpstreamResponse("a stream chunk has no 'choices'")
        return chunk

    def error_message(self, payload: bytes) -> str:
        try:
            data = json.loads(payload)
        except ValueError:
            return payload[:300].decode(errors="replace")
        if isinstance(data, dict):
            error = data.get("error")
            if isinstance(error, dict):
                return str(error.get("message", ""))
            if isinstance(error, str):
                return error
        return ""


def _json_object(payload: bytes) -> dict[str, Any]:
    try:
        data = fastjson.loads(payload)
    except ValueError:
        raise InvalidUpstreamResponse(f"not JSON: {payload[:80]!r}") from None
    if not isinstance(data, dict):
        raise InvalidUpstreamResponse("the JSON is not an object")
    return data


PROVIDER = OpenAIProvider()
