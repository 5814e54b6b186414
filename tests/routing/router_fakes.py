"""Scripted upstreams and the rules' settings for the router's unit tests (no sockets)."""

import asyncio
import zlib
from typing import Any

from beastmode.lib.errors import KINDS, GatewayError
from routing import router
from routing.registry import EndpointConfig, RouteConfig

ANSWER = {"choices": [{"index": 0, "message": {"content": "hi"}, "finish_reason": "stop"}]}
RETRYABLE = sorted(k.error_class for k in KINDS.values() if k.retryable)
NOT_RETRYABLE = sorted(
    k.error_class for k in KINDS.values() if k.endpoint_fault and not k.retryable
)


def endpoint(name: str, max_retries: int = 0, total_timeout_s: float = 60) -> EndpointConfig:
    return EndpointConfig(
        id=zlib.crc32(name.encode()), name=name, provider="openai", base_url=f"http://{name}.test/v1",
        upstream_model=f"{name}-model", api_key="", connect_timeout_s=1,
        first_byte_timeout_s=1, total_timeout_s=total_timeout_s, max_retries=max_retries,
        input_cost_per_1m=1, output_cost_per_1m=1,
    )  # fmt: skip


def failure(error_class: str, retry_after_s: float | None = None) -> GatewayError:
    return GatewayError(
        error_class, f"{error_class} happened.", retry_after_s=retry_after_s, upstream_status=599
    )


class Upstreams:
    """Scripted endpoints: each answers with its script in turn (the last entry repeats);
    an entry that is an exception is raised. `calls` lists the endpoints called, in order."""

    def __init__(self, scripts: dict[str, list[Any]]) -> None:
        self.scripts = scripts
        self.calls: list[str] = []
        self.budgets: list[float] = []  # the time each call was given
        self.on_call = lambda ep, budget_s: None  # e.g. time passing during the call

    async def fetch_completion(
        self, model_name: str, ep: EndpointConfig, body: dict[str, Any], *, budget_s: float
    ) -> dict[str, Any]:
        self.calls.append(ep.name)
        self.budgets.append(budget_s)
        self.on_call(ep, budget_s)
        script = self.scripts[ep.name]
        outcome = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def route(*endpoints: EndpointConfig) -> RouteConfig:
    return RouteConfig(model_name="m", endpoints=endpoints)


def complete(chain: RouteConfig) -> tuple[dict[str, Any] | GatewayError, router.Trace]:
    """The router's answer (or the error it raised) and its trace for one request."""
    trace = router.Trace()

    async def request() -> dict[str, Any] | GatewayError:
        try:
            return await router.complete(chain.model_name, chain, {"messages": []}, trace)
        except GatewayError as error:
            return error

    return asyncio.run(request()), trace


def error_classes(trace: router.Trace) -> list[str | None]:
    return [a.error_class for a in trace.attempts]
