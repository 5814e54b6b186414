"""The node's counters, histograms and gauges, and the Prometheus text served at /metrics.

Every process of a node writes its figures to files in the node's metrics directory
(monitoring/metrics_store.py; monitoring/metrics_dir.py says when it is emptied), and
/metrics merges them with prometheus-client's MultiProcessCollector, whichever process
answers: counters and histograms over every process since the node started (those of a
worker that ended were counted), gauges over the live processes only (their sum or their
maximum, by the file they are in). The database's request records remain the source of
truth across nodes.

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

from django.conf import settings
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from beastmode.lib import redaction
from monitoring import labels, metrics_dir, metrics_store
from monitoring.metrics_store import Counter, Gauge, Histogram, Store
from monitoring.records import RequestRow
from routing import breaker, registry
from routing.registry import EndpointConfig

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

metrics_dir.join(settings.METRICS_DIR)
_counters = Store(settings.METRICS_DIR, "counter")
_histograms = Store(settings.METRICS_DIR, "histogram")
# Gauges of the live processes only: a node's backlog is the sum of theirs; a circuit's
# state is the worst any of them holds.
_summed_gauges = Store(settings.METRICS_DIR, "gauge_livesum")
_worst_gauges = Store(settings.METRICS_DIR, "gauge_livemax")

_requests = Counter(
    _counters,
    "beastmode_requests",
    "Requests received, by model and outcome.",
    ("model", "outcome"),
)
_warming = Counter(
    _counters,
    "beastmode_warming_requests",
    "Cache warming calls (not in the other figures).",
    ("model", "outcome"),
)
_server_duration = Histogram(
    _histograms,
    "gen_ai_server_request_duration_seconds",
    "Chat completions as callers saw them, hits included.",
    DURATION_BUCKETS_S,
    ("gen_ai_operation_name", "gen_ai_request_model", "error_type"),
)
_client_duration = Histogram(  # by endpoint name; its attributes are added when shown
    _histograms,
    _CLIENT_DURATION,
    "Calls to upstream endpoints, one per attempt.",
    DURATION_BUCKETS_S,
    ("endpoint", "error_type"),
)
_token_usage = Histogram(
    _histograms,
    "gen_ai_client_token_usage",
    "Tokens per upstream answer (cache hits use none).",
    TOKEN_BUCKETS,
    ("gen_ai_operation_name", "gen_ai_request_model", "gen_ai_token_type"),
)
_cache = Counter(
    _counters,
    "beastmode_cache_requests",
    "Chat completions by cache outcome (kind) and tier.",
    ("model", "kind", "tier"),
)
_cost_usd = Counter(
    _counters, "beastmode_cost_usd", "Upstream cost at the endpoints' prices.", ("model",)
)
_cost_saved_usd = Counter(
    _counters,
    "beastmode_cost_saved_usd",
    "What the answers served from the cache cost upstream.",
    ("model",),
)
_tokens_saved = Counter(
    _counters,
    "beastmode_tokens_saved",
    "Upstream tokens not spent thanks to the cache.",
    ("model", "type"),
)
_snapshots = Counter(_counters, "beastmode_dashboard_snapshots", "Dashboard snapshots computed.")
_written_total = Counter(_counters, "beastmode_records_written", "Request records written.")
_pending = Gauge(_summed_gauges, "beastmode_records_pending", "Request records not yet written.")
_circuits = Gauge(
    _worst_gauges,
    _CIRCUIT_STATE,
    "Circuit per endpoint: 0 closed, 1 half-open, 2 open.",
    ("endpoint",),
)
# This process's own figures, for the dashboard's coverage (snapshot.py).
_submitted = [0]
_written = [0]
_publisher: threading.Thread | None = None


def observe_request(record: RequestRow) -> None:
    _submitted[0] += 1
    try:
        _observe(record)
    except OSError:  # a new series found the disk full: the request goes on without it
        log.warning("request not counted in /metrics", exc_info=True)


def _observe(record: RequestRow) -> None:
    model = labels.model_label(record["model"])
    with metrics_store.writing:
        if record["is_warming"]:  # the cache warming itself, not client traffic
            _warming.inc((model, record["outcome"]))
            return
        _requests.inc((model, record["outcome"]))
        if record["path"] not in _CHAT_PATHS:
            return
        chat = ("chat", model)
        _server_duration.observe((*chat, record["error_class"]), record["latency_ms"] / 1000)
        for attempt in record["attempt_log"]:
            attempt_labels = (attempt["endpoint"], attempt["error_class"] or "")
            _client_duration.observe(attempt_labels, attempt["latency_ms"] / 1000)
        if count := record["tokens_in"]:
            _token_usage.observe((*chat, "input"), count)
        if count := record["tokens_out"]:
            _token_usage.observe((*chat, "output"), count)
        if kind := record["cache_outcome"]:
            _cache.inc((model, kind, record["cache_tier"]))
        # A series appears at its model's first request, zero or not.
        _cost_usd.inc((model,), record["cost_usd"])
        if saved := record["cost_saved_usd"]:
            _cost_saved_usd.inc((model,), saved)
        _tokens_saved.inc((model, "input"), record["saved_tokens_in"])
        _tokens_saved.inc((model, "output"), record["saved_tokens_out"])


def observe_written(count: int) -> None:
    _written[0] += count
    with metrics_store.writing:
        _written_total.inc((), count)


def observe_snapshot() -> None:
    with metrics_store.writing:
        _snapshots.inc(())


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

    endpoints = registry.current().endpoints
    states = breaker.states().items()
    with metrics_store.writing:
        _pending.set((), recorder.pending_count())
        for endpoint_id, state in states:
            if endpoint := endpoints.get(endpoint_id):
                _circuits.set((endpoint.name,), _CIRCUIT_VALUE[state.state])


def exposition() -> str:
    """The node's figures: every process's files merged."""
    _publish_gauges()
    metrics_dir.sweep_dead()
    collectors = CollectorRegistry(auto_describe=False)
    collectors.register(_NodeCollector(str(settings.METRICS_DIR)))
    return generate_latest(collectors).decode()


class _NodeCollector(MultiProcessCollector):
    """The node's files merged, shown as now configured: endpoints no longer in the
    registry have no circuit, and each upstream attempt gets its endpoint's attributes."""

    def __init__(self, path: str) -> None:
        super().__init__(None, path)  # type: ignore[no-untyped-call]

    def collect(self) -> Iterator[Metric]:
        by_name = {ep.name: ep for ep in registry.current().endpoints.values()}
        redacted: dict[str, str] = {}  # label values repeat across samples: redact each once
        for family in super().collect():  # type: ignore[no-untyped-call]
            if family.name == _CIRCUIT_STATE:
                family.samples = [s for s in family.samples if s.labels["endpoint"] in by_name]
            elif family.name == _CLIENT_DURATION:
                family.samples = [
                    s._replace(labels=_upstream_labels(s.labels, by_name)) for s in family.samples
                ]
            family.samples = [
                s._replace(labels=_redacted_labels(s.labels, redacted)) for s in family.samples
            ]
            yield family


def _redacted_labels(labels: dict[str, str], redacted: dict[str, str]) -> dict[str, str]:
    """Label values (a model name is the client's choice) without key fragments."""
    shown = {}
    for name, value in labels.items():
        if (clean := redacted.get(value)) is None:
            clean = redacted[value] = redaction.redact(value)
        shown[name] = clean
    return shown


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
