"""In-process counters and the Prometheus text exposition served at /metrics.

Counts are per server process (the default deployment runs one); the database's
request records remain the source of truth across processes.

Names follow the OpenTelemetry GenAI semantic conventions where one applies, as their
Prometheus exporter spells them (dots → underscores, unit suffix): BeastMode serves
`gen_ai.server.request.duration` to its callers and is itself a client of the upstreams
(`gen_ai.client.operation.duration` per attempt, `gen_ai.client.token.usage`). What the
conventions do not cover (outcomes, the cache, cost, records, circuits) is `beastmode_*`.
"""

import bisect
from collections import defaultdict
from typing import Any

from monitoring.records import RequestRow
from routing import breaker, registry

# Sub-millisecond buckets too: cache hits and rejections take well under 10 ms.
DURATION_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120
)  # fmt: skip
# The explicit bucket boundaries the GenAI conventions give for token usage.
TOKEN_BUCKETS = tuple(4**n for n in range(14))
_CIRCUIT_VALUE = {breaker.CLOSED: 0, breaker.HALF_OPEN: 1, breaker.OPEN: 2}
_CHAT_PATHS = ("/v1/chat/completions", "/chat/completions")

Labels = tuple[tuple[str, str], ...]


class PrometheusHistogram:
    """A Prometheus histogram per label set: bucket counts (non-cumulative) and a sum."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.series: dict[Labels, tuple[list[int], list[float]]] = {}

    def observe(self, labels: Labels, value: float) -> None:
        if labels not in self.series:
            self.series[labels] = ([0] * (len(self.bounds) + 1), [0.0])
        counts, total = self.series[labels]
        counts[bisect.bisect_left(self.bounds, value)] += 1
        total[0] += value

    def lines(self, name: str, relabel: Any = dict) -> list[str]:
        out = []
        for labels, (counts, total) in sorted(self.series.items()):
            shown = relabel(labels)
            cumulative = 0
            for bound, count in zip((*self.bounds, "+Inf"), counts, strict=True):
                cumulative += count
                out.append(f"{name}_bucket{_labels(**shown, le=str(bound))} {cumulative}")
            out.append(f"{name}_sum{_labels(**shown)} {total[0]:.6f}")
            out.append(f"{name}_count{_labels(**shown)} {cumulative}")
        return out


_requests: defaultdict[tuple[str, str], int] = defaultdict(int)
_warming: defaultdict[tuple[str, str], int] = defaultdict(int)
_server_duration = PrometheusHistogram(DURATION_BUCKETS_S)
_client_duration = PrometheusHistogram(DURATION_BUCKETS_S)  # per upstream attempt, by endpoint name
_token_usage = PrometheusHistogram(TOKEN_BUCKETS)
_cache: defaultdict[tuple[str, str, str], int] = defaultdict(int)
_cost_usd: defaultdict[str, float] = defaultdict(float)
_cost_saved_usd: defaultdict[str, float] = defaultdict(float)
_tokens_saved: defaultdict[tuple[str, str], int] = defaultdict(int)
_written = [0]


def observe_request(record: RequestRow) -> None:
    model = record["model"]
    if record["is_warming"]:  # the cache warming itself, not client traffic
        _warming[(model, record["outcome"])] += 1
        return
    _requests[(model, record["outcome"])] += 1
    if record["path"] not in _CHAT_PATHS:
        return
    error_type = record["error_class"]
    chat = (("gen_ai_operation_name", "chat"), ("gen_ai_request_model", model))
    _server_duration.observe((*chat, ("error_type", error_type)), record["latency_ms"] / 1000)
    for attempt in record["attempt_log"]:
        labels = (("endpoint", attempt["endpoint"]), ("error_type", attempt["error_class"] or ""))
        _client_duration.observe(labels, attempt["latency_ms"] / 1000)
    tokens = (("input", record["tokens_in"]), ("output", record["tokens_out"]))
    for token_type, count in tokens:
        if count:
            _token_usage.observe((*chat, ("gen_ai_token_type", token_type)), count)
    if kind := record["cache_outcome"]:
        _cache[(model, kind, record["cache_tier"])] += 1
    _cost_usd[model] += record["cost_usd"]
    if saved := record["cost_saved_usd"]:
        _cost_saved_usd[model] += saved
    _tokens_saved[(model, "input")] += record["saved_tokens_in"]
    _tokens_saved[(model, "output")] += record["saved_tokens_out"]


def observe_written(count: int) -> None:
    _written[0] += count


def records_submitted() -> int:
    """Every record this process queued: client requests and warming calls."""
    return sum(_requests.values()) + sum(_warming.values())


def records_written() -> int:
    return _written[0]


def exposition(pending_records: int) -> str:
    from monitoring import producer

    lines: list[str] = []
    _family(
        lines, "beastmode_requests_total", "counter", "Requests received, by model and outcome."
    )
    for (model, outcome), count in sorted(_requests.items()):
        lines.append(f"beastmode_requests_total{_labels(model=model, outcome=outcome)} {count}")
    name = "beastmode_warming_requests_total"
    _family(lines, name, "counter", "Cache warming calls (not in the other figures).")
    for (model, outcome), count in sorted(_warming.items()):
        lines.append(f"{name}{_labels(model=model, outcome=outcome)} {count}")

    name = "gen_ai_server_request_duration_seconds"
    _family(lines, name, "histogram", "Chat completions as callers saw them, hits included.")
    lines += _server_duration.lines(name)
    name = "gen_ai_client_operation_duration_seconds"
    _family(lines, name, "histogram", "Calls to upstream endpoints, one per attempt.")
    lines += _client_duration.lines(name, relabel=_upstream_labels())
    name = "gen_ai_client_token_usage"
    _family(lines, name, "histogram", "Tokens per upstream answer (cache hits use none).")
    lines += _token_usage.lines(name)

    name = "beastmode_cache_requests_total"
    _family(lines, name, "counter", "Chat completions by cache outcome (kind) and tier.")
    for (model, kind, tier), count in sorted(_cache.items()):
        lines.append(f"{name}{_labels(model=model, kind=kind, tier=tier)} {count}")
    name = "beastmode_cost_usd_total"
    _family(lines, name, "counter", "Upstream cost at the endpoints' prices.")
    for model, cost in sorted(_cost_usd.items()):
        lines.append(f"{name}{_labels(model=model)} {cost:.8f}")
    name = "beastmode_cost_saved_usd_total"
    _family(lines, name, "counter", "What the answers served from the cache cost upstream.")
    for model, cost in sorted(_cost_saved_usd.items()):
        lines.append(f"{name}{_labels(model=model)} {cost:.8f}")
    name = "beastmode_tokens_saved_total"
    _family(lines, name, "counter", "Upstream tokens not spent thanks to the cache.")
    for (model, token_type), count in sorted(_tokens_saved.items()):
        lines.append(f"{name}{_labels(model=model, type=token_type)} {count}")

    name = "beastmode_dashboard_snapshots_total"
    _family(lines, name, "counter", "Dashboard snapshots computed.")
    lines.append(f"{name} {producer.computations[0]}")
    _family(lines, "beastmode_records_written_total", "counter", "Request records written.")
    lines.append(f"beastmode_records_written_total {_written[0]}")
    _family(lines, "beastmode_records_pending", "gauge", "Request records not yet written.")
    lines.append(f"beastmode_records_pending {pending_records}")

    name = "beastmode_circuit_state"
    _family(lines, name, "gauge", "Circuit per endpoint: 0 closed, 1 half-open, 2 open.")
    endpoints = registry.current().endpoints
    for endpoint_id, state in sorted(breaker.states().items()):
        if endpoint := endpoints.get(endpoint_id):
            lines.append(f"{name}{_labels(endpoint=endpoint.name)} {_CIRCUIT_VALUE[state.state]}")
    return "\n".join(lines) + "\n"


def _upstream_labels() -> Any:
    """Endpoint name → the conventions' attributes of the upstream call (as now configured)."""
    by_name = {ep.name: ep for ep in registry.current().endpoints.values()}

    def relabel(labels: Labels) -> dict[str, str]:
        shown = dict(labels)
        endpoint = by_name.get(shown["endpoint"])
        return {
            "gen_ai_operation_name": "chat",
            "gen_ai_provider_name": endpoint.provider if endpoint else "",
            "gen_ai_request_model": endpoint.upstream_model if endpoint else "",
            "server_address": endpoint.host if endpoint else "",
            **shown,
        }

    return relabel


def _family(lines: list[str], name: str, kind: str, help_text: str) -> None:
    base = name.removesuffix("_total") if kind == "counter" else name
    lines.append(f"# HELP {base} {help_text}")
    lines.append(f"# TYPE {base} {kind}")


def _labels(**labels: str) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")

    return "{" + ",".join(f'{key}="{escape(value)}"' for key, value in labels.items()) + "}"
