"""/metrics counts every process of a node: a real `uvicorn --workers 2` on the test
database, whichever worker answers the scrape, after a worker is killed and restarted,
and not after the node itself is started anew."""

import fcntl
import os
import re
import signal
import sys
from collections.abc import Iterator, Set
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from monitoring import metrics_dir as metrics_dir_module
from tests.personas import Client, ModelFactory
from tests.processes import (
    Process,
    free_port,
    http,
    server_env,
    start_process,
    stop_process,
    wait_until,
)

WORKERS = 2


@pytest.fixture
def node_env(tmp_path: Path) -> dict[str, str]:
    """One node's environment: the workers share its metrics directory, which is this
    test's alone. (server_env's var/metrics-node-N is numbered per pytest session: a
    session running beside this one gives the same name to a node of its own, whose
    processes then belong to this node's run, and it counts the same model names.)"""
    env = server_env()
    env["BEASTMODE_METRICS_DIR"] = str(tmp_path / "metrics")
    return env


def start_node(env: dict[str, str]) -> Process:
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", "beastmode.asgi:application", "--no-access-log",
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(WORKERS)]  # fmt: skip
    return start_process(args, port, "metrics-node", env)


@pytest.fixture
def node(node_env: dict[str, str], django_db_setup: None) -> Iterator[Process]:
    process = start_node(node_env)
    yield process
    stop_process(process)


def ask(node: Process, client: Client, model: str) -> bool:
    """Whether the request succeeded (those are the ones the test counts): a worker that
    has just started may answer 500 until its registry is loaded."""
    body = {"model": model, "messages": [{"role": "user", "content": "count me"}]}
    reply = http(f"{node.url}/v1/chat/completions", method="POST", key=client.key, body=body)
    return reply.status == 200


def scraped(node: Process, model: str) -> float:
    """The node's count of the model's successful requests, as one /metrics answer says."""
    text = http(f"{node.url}/metrics").body.decode()
    series = f'beastmode_requests_total{{model="{model}",outcome="success"}}'
    found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def counted_by_each(metrics_dir: Path, model: str) -> dict[int, float]:
    """The model's requests as each process's own file counts them, by pid."""
    counts = {}
    for file in metrics_dir.glob("counter_*.db"):
        for family in MultiProcessCollector.merge([str(file)]):
            for sample in family.samples:
                if sample.name == "beastmode_requests_total" and sample.labels["model"] == model:
                    counts[int(file.stem.removeprefix("counter_"))] = sample.value
    return counts


def workers(node: Process, metrics_dir: Path) -> set[int]:
    """The master's children that joined the node's metrics (not its resource tracker)."""
    master = node.popen.pid
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    joined = {int(f.stem.rpartition("_")[2]) for f in metrics_dir.glob("counter_*.db")}
    return {int(pid) for pid in children} & joined


def all_workers(
    node: Process, metrics_dir: Path, replacing: Set[int] = frozenset(), all_new: bool = False
) -> set[int]:
    """The workers' pids once there are as many as configured (and some, or all, are not
    in `replacing`: a killed worker stays the master's child until it is reaped)."""
    pids = workers(node, metrics_dir)
    new = pids - replacing
    if len(pids) != WORKERS or (replacing and not new) or (all_new and new != pids):
        return set()
    return pids


def none_alive(metrics_dir: Path) -> bool:
    """Whether no process holds its byte of the node's lock file any more (what a process
    that joins checks: monitoring/metrics_dir.py)."""
    fd = os.open(metrics_dir / metrics_dir_module.LOCK_FILE, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 0, 1)  # every byte but the mutex
    except OSError:
        return False
    finally:
        os.close(fd)  # (releases the lock too)
    return True


def routes(node: Process, client: Client, model: str) -> bool:
    """Whether the worker that answers knows the key and the model."""
    reply = http(f"{node.url}/v1/models", key=client.key)
    return reply.status == 200 and model in {m["id"] for m in reply.json()["data"]}


def send_until_every_worker_answered(
    node: Process, client: Client, model: str, metrics_dir: Path, pids: set[int]
) -> int:
    """Requests (4 at a time) until each of those workers answered some; how many were sent."""
    sent = 0
    with ThreadPoolExecutor(4) as pool:

        def answered_by_all() -> bool:
            nonlocal sent
            sent += sum(pool.map(lambda _: ask(node, client, model), range(8)))
            counts = counted_by_each(metrics_dir, model)
            return all(counts.get(pid, 0) > 0 for pid in pids)

        wait_until(answered_by_all, timeout_s=30)
    return sent


def every_scrape_says(node: Process, model: str, count: float, scrapes: int = 10) -> bool:
    """Whichever worker answers (the kernel picks one per connection)."""
    return all(scraped(node, model) == count for _ in range(scrapes))


def test_a_scrape_counts_the_requests_of_every_worker_and_of_killed_ones(
    node: Process, node_env: dict[str, str], alice: Client, model_with: ModelFactory
) -> None:
    metrics_dir = Path(node_env["BEASTMODE_METRICS_DIR"])
    model = model_with("")
    # Each worker follows the registry on its own: wait until both route the model.
    wait_until(lambda: all(routes(node, alice, model) for _ in range(10)), timeout_s=20)
    first = wait_until(lambda: all_workers(node, metrics_dir), timeout_s=20)

    sent = send_until_every_worker_answered(node, alice, model, metrics_dir, first)
    assert every_scrape_says(node, model, sent)

    # A killed worker: uvicorn starts another; what the dead one counted stays counted,
    # its live gauges go (records_pending is summed over live processes only).
    killed = min(first)
    os.kill(killed, signal.SIGKILL)
    replaced = wait_until(lambda: all_workers(node, metrics_dir, replacing=first), timeout_s=20)
    assert every_scrape_says(node, model, sent)
    wait_until(lambda: not list(metrics_dir.glob(f"gauge_live*_{killed}.db")), timeout_s=5)
    sent += send_until_every_worker_answered(node, alice, model, metrics_dir, replaced)
    assert every_scrape_says(node, model, sent)

    # Every worker killed at once: the master restarts them and the node's run goes on.
    for pid in replaced:
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: all_workers(node, metrics_dir, replacing=replaced, all_new=True), 30)
    wait_until(lambda: routes(node, alice, model), timeout_s=20)
    assert every_scrape_says(node, model, sent)


def test_a_node_started_anew_does_not_inherit_the_last_runs_counts(
    node: Process, node_env: dict[str, str], alice: Client, model_with: ModelFactory
) -> None:
    metrics_dir = Path(node_env["BEASTMODE_METRICS_DIR"])
    model = model_with("")
    wait_until(lambda: all(routes(node, alice, model) for _ in range(10)), timeout_s=20)
    assert ask(node, alice, model)
    assert every_scrape_says(node, model, 1)
    stop_process(node)
    # Restarted means the old node ended: its workers too, not only the master that
    # stop_process waited for.
    wait_until(lambda: none_alive(metrics_dir), timeout_s=10)

    again = start_node(node_env)  # the same directory, as a restarted node would have
    try:
        wait_until(lambda: all(routes(again, alice, model) for _ in range(10)), timeout_s=20)
        assert every_scrape_says(again, model, 0)
    finally:
        stop_process(again)
