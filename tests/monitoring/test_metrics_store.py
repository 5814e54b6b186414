"""The files monitoring/metrics_store.py writes are prometheus-client's: its collector reads
them, whatever their size, after a restart on the same pid, and from a forked child."""

import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from monitoring.metrics_store import Counter, Gauge, Histogram, Store

pytestmark = pytest.mark.embedded


def exposed(directory: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample prometheus-client's collector reads from the directory."""
    collectors = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(collectors, str(directory))
    text = generate_latest(collectors).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_counters_histograms_and_gauges_read_back_through_prometheus_client(
    tmp_path: Path,
) -> None:
    requests = Counter(Store(tmp_path, "counter"), "requests", "Requests.", ("model",))
    latency = Histogram(Store(tmp_path, "histogram"), "latency_s", "Latency.", (0.1, 1), ("m",))
    pending = Gauge(Store(tmp_path, "gauge_livesum"), "pending", "Pending.")
    for n in range(2000):  # past the first 64 KiB of the file: it grows and is mapped again
        requests.inc((f"model-{n}",), 1.0 if n else 2.5)
    latency.observe(("a",), 0.1)  # le is inclusive
    latency.observe(("a",), 0.5)
    latency.observe(("a",), 7.0)
    pending.set((), 3)

    samples = exposed(tmp_path)
    assert samples["requests_total", (("model", "model-0"),)] == 2.5
    assert samples["requests_total", (("model", "model-1999"),)] == 1
    buckets = [
        samples["latency_s_bucket", (("le", le), ("m", "a"))] for le in ("0.1", "1.0", "+Inf")
    ]
    assert buckets == [1, 2, 3]  # cumulative, as the collector shows them
    assert samples["latency_s_count", (("m", "a"),)] == 3
    assert samples["latency_s_sum", (("m", "a"),)] == 7.6
    assert samples["pending", ()] == 3


def test_a_process_with_the_pid_of_an_earlier_one_goes_on_from_its_counts(
    tmp_path: Path,
) -> None:
    Counter(Store(tmp_path, "counter"), "requests", "Requests.", ("model",)).inc(("a",), 2)
    again = Counter(Store(tmp_path, "counter"), "requests", "Requests.", ("model",))
    again.inc(("b",))
    again.inc(("a",))

    samples = exposed(tmp_path)
    assert samples["requests_total", (("model", "a"),)] == 3
    assert samples["requests_total", (("model", "b"),)] == 1


def test_a_forked_child_counts_in_a_file_of_its_own(tmp_path: Path) -> None:
    requests = Counter(Store(tmp_path, "counter"), "requests", "Requests.", ("model",))
    requests.inc(("a",))
    child = os.fork()
    if child == 0:  # the child: count, and leave at once (no pytest teardown here)
        requests.inc(("a",), 10)
        os._exit(0)
    _, status = os.waitpid(child, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert sorted(p.name for p in tmp_path.glob("counter_*.db")) == sorted(
        [f"counter_{os.getpid()}.db", f"counter_{child}.db"]
    )
    assert exposed(tmp_path)["requests_total", (("model", "a"),)] == 11
