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
from routing.models import EndpointProbe

PROBE_BODY = {"messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}


@dataclass(frozen=True)
class ProbeResult:
    endpoint: str
    ok: bool
    latency_ms: float
    error_class: str = ""
    message: str = ""
    tips: list[str] = field(default_factory=list)


def probe(endpoint_ids: list[int]) -> list[ProbeResult]:
    """Probe endpoints concurrently (disabled ones too: admins test before enabling)."""
    configs = registry.load_endpoint_configs(endpoint_ids)
    results = asyncio.run(_probe_many(configs))
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


async def _probe_many(configs: list[registry.EndpointConfig]) -> list[ProbeResult]:
    try:
        return list(await asyncio.gather(*(_probe_one(config) for config in configs)))
    finally:
        await calls.close_connections()


async def _probe_one(endpoint: registry.EndpointConfig) -> ProbeResult:
    started = time.perf_counter()
    try:
        await calls.fetch_completion(endpoint.upstream_model, endpoint, PROBE_BODY)
    except GatewayError as error:
        latency_ms = (time.perf_counter() - started) * 1000
        if error.kind.endpoint_fault:
            breaker.for_endpoint(endpoint.id).record_failure(error.error_class)
        # Redacted here, before the admin page shows it or EndpointProbe stores it.
        return ProbeResult(
            endpoint.name, False, latency_ms, error.error_class,
            redaction.redact(error.message), [redaction.redact(tip) for tip in error.tips],
        )  # fmt: skip
    breaker.for_endpoint(endpoint.id).record_success()
    return ProbeResult(endpoint.name, True, (time.perf_counter() - started) * 1000)
