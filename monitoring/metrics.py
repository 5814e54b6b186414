"""In-process counters and the Prometheus text exposition served at /metrics.

Counts are per server process (the default deployment runs one); the database's
request records remain the source of truth across processes.
"""

import bisect
from collections import defaultdict
from typing import Any

from routing import breaker, registry

# Sub-millisecond buckets too: cache hits and rejections take well under 10 ms.
LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120
)  # fmt: skip
_CIRCUIT_VALUE = {breaker.CLOSED: 0, breaker.HALF_OPEN: 1, breaker.OPEN: 2}

_requests: defaultdict[tuple[str, str], int] = defaultdict(int)
_latency_buckets: defaultdict[str, list[int]] = defaultdict(
    lambda: [0] * (len(LATENCY_BUCKETS_S) + 1)
)
_latency_sum_s: defaultdict[str, float] = defaultdict(float)
_tokens: defaultdict[tuple[str, str], int] = defaultdict(int)
_cost_usd: defaultdict[str, float] = defaultdict(float)
_written = [0]


def observe_request(record: dict[str, Any]) -> None:
    model = record.get("model") or ""
    _requests[(model, record["outcome"])] += 1
    latency_s = record["latency_ms"] / 1000
    _latency_buckets[model][bisect.bisect_left(LATENCY_BUCKETS_S, latency_s)] += 1
    _latency_sum_s[model] += latency_s
    _tokens[(model, "input")] += record.get("tokens_in", 0)
    _tokens[(model, "output")] += record.get("tokens_out", 0)
    _cost_usd[model] += record.get("cost_usd", 0.0)


def observe_written(count: int) -> None:
    _written[0] += count


def requests_received() -> int:
    return sum(_requests.values())


def records_written() -> int:
    return _written[0]


def exposition(pending_records: int) -> str:
    lines: list[str] = []
    _family(lines, "beastmode_requests", "counter", "Requests received, by model and outcome.")
    for (model, outcome), count in sorted(_requests.items()):
        lines.append(f"beastmode_requests_total{_labels(model=model, outcome=outcome)} {count}")

    _family(
        lines,
        "beastmode_request_duration_seconds",
        "histogram",
        "Total request latency as the client saw it (gen_ai.client.operation.duration).",
    )
    for model, counts in sorted(_latency_buckets.items()):
        cumulative = 0
        for bound, count in zip((*LATENCY_BUCKETS_S, "+Inf"), counts, strict=True):
            cumulative += count
            labels = _labels(model=model, le=str(bound))
            lines.append(f"beastmode_request_duration_seconds_bucket{labels} {cumulative}")
        lines.append(
            f"beastmode_request_duration_seconds_sum{_labels(model=model)} "
            f"{_latency_sum_s[model]:.6f}"
        )
        lines.append(f"beastmode_request_duration_seconds_count{_labels(model=model)} {cumulative}")

    _family(lines, "beastmode_tokens", "counter", "Tokens (gen_ai.client.token.usage) by type.")
    for (model, token_type), count in sorted(_tokens.items()):
        lines.append(f"beastmode_tokens_total{_labels(model=model, type=token_type)} {count}")

    _family(lines, "beastmode_cost_usd", "counter", "Upstream cost at the endpoints' prices.")
    for model, cost in sorted(_cost_usd.items()):
        lines.append(f"beastmode_cost_usd_total{_labels(model=model)} {cost:.8f}")

    from monitoring import producer

    _family(lines, "beastmode_dashboard_snapshots", "counter", "Dashboard snapshots computed.")
    lines.append(f"beastmode_dashboard_snapshots_total {producer.computations[0]}")
    _family(lines, "beastmode_records_written", "counter", "Request records written.")
    lines.append(f"beastmode_records_written_total {_written[0]}")
    _family(lines, "beastmode_records_pending", "gauge", "Request records not yet written.")
    lines.append(f"beastmode_records_pending {pending_records}")

    _family(
        lines,
        "beastmode_circuit_state",
        "gauge",
        "Circuit per endpoint: 0 closed, 1 half-open, 2 open.",
    )
    endpoints = registry.current().endpoints
    for endpoint_id, state in sorted(breaker.states().items()):
        if endpoint := endpoints.get(endpoint_id):
            value = _CIRCUIT_VALUE[state.state]
            lines.append(f"beastmode_circuit_state{_labels(endpoint=endpoint.name)} {value}")
    return "\n".join(lines) + "\n"


def _family(lines: list[str], name: str, kind: str, help_text: str) -> None:
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} {kind}")


def _labels(**labels: str) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")

    return "{" + ",".join(f'{key}="{escape(value)}"' for key, value in labels.items()) + "}"
