"""The node's counters, histograms and gauges, and the Prometheus text served at /metrics.

Every process of a node writes its figures to files in the node's metrics directory
(prometheus-client's multiprocess mode; monitoring/metrics_dir.py says when it is emptied),
and /metrics merges them, whichever process answers: counters and histograms over every
process since the node started (those of a worker that ended were counted), gauges over
the live processes only (`multiprocess_mode`). The database's request records remain the
source of truth across nodes.

Names follow the OpenTelemetry GenAI semantic conventions where one applies, as their
Prometheus exporter spells them (dots → underscores, unit suffix): BeastMode serves
`gen_ai.server.request.duration` to its callers and is itself a client of the upstreams
(`gen_ai.client.operation.duration` per attempt, `gen_ai.client.token.usage`). What the
conventions do not cover (outcomes, the cache, cost, records, circuits) is `beastmode_*`.
"""

import logging
import threading
import time
from collections.abc import Iterator
from typing import Generic, TypeVar

from django.conf import settings

from monitoring import metrics_dir

metrics_dir.join(settings.METRICS_DIR)  # before prometheus-client picks its storage

from prometheus_client import (  # noqa: E402
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.metrics_core import Metric  # noqa: E402
from prometheus_client.multiprocess import MultiProcessCollector  # noqa: E402

from monitoring.records import RequestRow  # noqa: E402
from routing import breaker, registry  # noqa: E402
from routing.registry import EndpointConfig  # noqa: E402

if not getattr(values.ValueClass, "_multiprocess", False):
    raise RuntimeError("prometheus_client was imported before monitoring.metrics chose its dir")
values.ValueClass = values.MultiProcessValue(metrics_dir.pid)  # type: ignore[no-untyped-call]

log = logging.getLogger(__name__)

# Sub-millisecond buckets too: cache hits and rejections take well under 10 ms.
DURATION_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120
)  # fmt: skip
# The explicit bucket boundaries the GenAI conventions give for token usage.
TOKEN_BUCKETS = tuple(4**n for n in range(14))
# Each live process publishes its gauges (backlog, circuits) this often; the one answering
# a scrape publishes its own first.
GAUGES_INTERVAL_S = 1.0
_CIRCUIT_VALUE = {breaker.CLOSED: 0, breaker.HALF_OPEN: 1, breaker.OPEN: 2}
_CHAT_PATHS = ("/v1/chat/completions", "/chat/completions")
_CLIENT_DURATION = "gen_ai_client_operation_duration_seconds"
_CIRCUIT_STATE = "beastmode_circuit_state"

M = TypeVar("M", Counter, Histogram, Gauge)


class _Children(dict[tuple[str, ...], M], Generic[M]):
    """A labelled metric's children by label values: `labels()` validates and converts
    its values on every call, a dict lookup is all the hot path pays here."""

    def __init__(self, family: M) -> None:
        super().__init__()
        self.family: M = family

    def __missing__(self, key: tuple[str, ...]) -> M:
        child = self[key] = self.family.labels(*key)
        return child


def _counter(name: str, help_text: str, *labels: str) -> _Children[Counter]:
    return _Children(Counter(name, help_text, labels, registry=None))


def _histogram(
    name: str, help_text: str, bounds: tuple[float, ...], *labels: str
) -> _Children[Histogram]:
    return _Children(Histogram(name, help_text, labels, buckets=bounds, registry=None))


_requests = _counter(
    "beastmode_requests_total", "Requests received, by model and outcome.", "model", "outcome"
)
_warming = _counter(
    "beastmode_warming_requests_total",
    "Cache warming calls (not in the other figures).",
    *("model", "outcome"),
)
_server_duration = _histogram(
    "gen_ai_server_request_duration_seconds",
    "Chat completions as callers saw them, hits included.",
    DURATION_BUCKETS_S,
    *("gen_ai_operation_name", "gen_ai_request_model", "error_type"),
)
_client_duration = _histogram(  # by endpoint name; its attributes are added when shown
    _CLIENT_DURATION,
    "Calls to upstream endpoints, one per attempt.",
    DURATION_BUCKETS_S,
    *("endpoint", "error_type"),
)
_token_usage = _histogram(
    "gen_ai_client_token_usage",
    "Tokens per upstream answer (cache hits use none).",
    TOKEN_BUCKETS,
    *("gen_ai_operation_name", "gen_ai_request_model", "gen_ai_token_type"),
)
_cache = _counter(
    "beastmode_cache_requests_total",
    "Chat completions by cache outcome (kind) and tier.",
    *("model", "kind", "tier"),
)
_cost_usd = _counter("beastmode_cost_usd_total", "Upstream cost at the endpoints' prices.", "model")
_cost_saved_usd = _counter(
    "beastmode_cost_saved_usd_total",
    "What the answers served from the cache cost upstream.",
    "model",
)
_tokens_saved = _counter(
    "beastmode_tokens_saved_total",
    "Upstream tokens not spent thanks to the cache.",
    *("model", "type"),
)
_snapshots = Counter(
    "beastmode_dashboard_snapshots_total", "Dashboard snapshots computed.", registry=None
)
_written_total = Counter(
    "beastmode_records_written_total", "Request records written.", registry=None
)
# Gauges of the live processes only: a node's backlog is the sum of theirs; a circuit's
# state is the worst any of them holds.
_pending = Gauge(
    "beastmode_records_pending",
    "Request records not yet written.",
    multiprocess_mode="livesum",
    registry=None,
)
_circuits = _Children(
    Gauge(
        _CIRCUIT_STATE,
        "Circuit per endpoint: 0 closed, 1 half-open, 2 open.",
        ["endpoint"],
        multiprocess_mode="livemax",
        registry=None,
    )
)
# This process's own figures, for the dashboard's coverage (snapshot.py).
_submitted = [0]
_written = [0]
_publisher: threading.Thread | None = None


def observe_request(record: RequestRow) -> None:
    model = record["model"]
    _submitted[0] += 1
    if record["is_warming"]:  # the cache warming itself, not client traffic
        _warming[(model, record["outcome"])].inc()
        return
    _requests[(model, record["outcome"])].inc()
    if record["path"] not in _CHAT_PATHS:
        return
    error_type = record["error_class"]
    _server_duration[("chat", model, error_type)].observe(record["latency_ms"] / 1000)
    for attempt in record["attempt_log"]:
        labels = (attempt["endpoint"], attempt["error_class"] or "")
        _client_duration[labels].observe(attempt["latency_ms"] / 1000)
    if count := record["tokens_in"]:
        _token_usage[("chat", model, "input")].observe(count)
    if count := record["tokens_out"]:
        _token_usage[("chat", model, "output")].observe(count)
    if kind := record["cache_outcome"]:
        _cache[(model, kind, record["cache_tier"])].inc()
    # A series appears at its first request, zero or not; a zero is not written.
    _inc(_cost_usd[(model,)], record["cost_usd"])
    if saved := record["cost_saved_usd"]:
        _cost_saved_usd[(model,)].inc(saved)
    _inc(_tokens_saved[(model, "input")], record["saved_tokens_in"])
    _inc(_tokens_saved[(model, "output")], record["saved_tokens_out"])


def _inc(counter: Counter, amount: float) -> None:
    if amount:
        counter.inc(amount)


def observe_written(count: int) -> None:
    _written[0] += count
    _written_total.inc(count)


def observe_snapshot() -> None:
    _snapshots.inc()


def records_submitted() -> int:
    """Every record this process queued: client requests and warming calls."""
    return _submitted[0]


def records_written() -> int:
    return _written[0]


def start_publishing_gauges() -> None:
    """Publish this process's gauges every GAUGES_INTERVAL_S (for the scrapes that other
    processes of the node answer)."""
    global _publisher
    if _publisher is None:
        _publisher = threading.Thread(target=_publish_forever, name="metrics-gauges", daemon=True)
        _publisher.start()


def _publish_forever() -> None:
    while True:
        try:
            _publish_gauges()
        except Exception:
            log.warning("could not publish this process's gauges", exc_info=True)
        time.sleep(GAUGES_INTERVAL_S)


def _publish_gauges() -> None:
    from monitoring import recorder

    _pending.set(recorder.pending_count())
    endpoints = registry.current().endpoints
    for endpoint_id, state in breaker.states().items():
        if endpoint := endpoints.get(endpoint_id):
            _circuits[(endpoint.name,)].set(_CIRCUIT_VALUE[state.state])


def exposition() -> str:
    """The node's figures: every process's files merged."""
    _publish_gauges()
    metrics_dir.sweep_dead()
    collectors = CollectorRegistry(auto_describe=False)
    collectors.register(_NodeCollector(str(settings.METRICS_DIR)))
    return generate_latest(collectors).decode()


class _NodeCollector(MultiProcessCollector):
    """The merged files, shown as now configured: endpoints no longer in the registry have
    no circuit, and each upstream attempt gets its endpoint's attributes."""

    def __init__(self, path: str) -> None:
        super().__init__(None, path)  # type: ignore[no-untyped-call]

    def collect(self) -> Iterator[Metric]:
        by_name = {ep.name: ep for ep in registry.current().endpoints.values()}
        for family in super().collect():  # type: ignore[no-untyped-call]
            if family.name == _CIRCUIT_STATE:
                family.samples = [s for s in family.samples if s.labels["endpoint"] in by_name]
            elif family.name == _CLIENT_DURATION:
                family.samples = [
                    s._replace(labels=_upstream_labels(s.labels, by_name)) for s in family.samples
                ]
            yield family


def _upstream_labels(shown: dict[str, str], by_name: dict[str, EndpointConfig]) -> dict[str, str]:
    """The conventions' attributes of an upstream call, from its endpoint as configured."""
    endpoint = by_name.get(shown["endpoint"])
    return {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": endpoint.provider if endpoint else "",
        "gen_ai_request_model": endpoint.upstream_model if endpoint else "",
        "server_address": endpoint.host if endpoint else "",
        **shown,
    }
