"""Endpoint probes: the admin's "test connection" and the periodic Celery health check.

A probe sends the smallest possible chat completion through the same upstream code as
live traffic, so it gets exactly the diagnosis (and tips) a live request would get.
"""

import asyncio
import time
from dataclasses import dataclass, field

from django.utils import timezone

from beastmode.lib import redaction
from beastmode.lib.errors import GatewayError
from routing import breaker, calls, registry
from routing.models import EndpointProbe, RouteEndpoint

PROBE_BODY = {"messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}


@dataclass(frozen=True)
class ProbeResult:
    endpoint: str
    ok: bool
    latency_ms: float
    error_class: str = ""
    message: str = ""
    tips: list[str] = field(default_factory=list)
    model: str = ""  # the name clients use; "" when no route uses the endpoint


def probe(endpoint_ids: list[int]) -> list[ProbeResult]:
    """Probe endpoints concurrently (disabled ones too: admins test before enabling)."""
    configs = registry.load_endpoint_configs(endpoint_ids)
    results = asyncio.run(_probe_many(configs, _model_names(endpoint_ids)))
    now = timezone.now()
    for config, result in zip(configs, results, strict=True):
        EndpointProbe.objects.update_or_create(
            endpoint_id=config.id,
            defaults={
                "ok": result.ok,
                "latency_ms": result.latency_ms,
                "error_class": result.error_class,
                "message": result.message,
                "checked_at": now,
            },
        )
    return results


def probe_all() -> dict[str, bool]:
    snapshot = registry.reload()
    return {result.endpoint: result.ok for result in probe(list(snapshot.endpoints))}


def _model_names(endpoint_ids: list[int]) -> dict[int, str]:
    """The model name clients use for each endpoint (the first by name when several routes
    share it), so a diagnosis reads as the API's would: "Model 'demo': endpoint ..."."""
    names: dict[int, str] = {}
    links = RouteEndpoint.objects.filter(endpoint_id__in=endpoint_ids).order_by("route__model_name")
    for endpoint_id, model_name in links.values_list("endpoint_id", "route__model_name"):
        names.setdefault(endpoint_id, model_name)
    return names


async def _probe_many(
    configs: list[registry.EndpointConfig], model_names: dict[int, str]
) -> list[ProbeResult]:
    probes = (_probe_one(config, model_names.get(config.id, "")) for config in configs)
    try:
        return list(await asyncio.gather(*probes))
    finally:
        await calls.close_connections()


async def _probe_one(endpoint: registry.EndpointConfig, model_name: str) -> ProbeResult:
    """`model_name` is "" for an endpoint in no route: its diagnosis names the endpoint."""
    started = time.perf_counter()
    try:
        await calls.fetch_completion(model_name or endpoint.name, endpoint, PROBE_BODY)
    except GatewayError as error:
        latency_ms = (time.perf_counter() - started) * 1000
        if error.kind.endpoint_fault:
            breaker.for_endpoint(endpoint.id).record_failure(error.error_class)
        # Redacted here, before the admin page shows it or EndpointProbe stores it.
        return ProbeResult(
            endpoint.name, False, latency_ms, error.error_class,
            redaction.redact(error.message), [redaction.redact(tip) for tip in error.tips],
            model_name,
        )  # fmt: skip
    breaker.for_endpoint(endpoint.id).record_success()
    latency_ms = (time.perf_counter() - started) * 1000
    return ProbeResult(endpoint.name, True, latency_ms, model=model_name)
