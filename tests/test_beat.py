"""Exactly one beat in a cluster: every `celery worker -B` embeds a beat, and RedBeat's
lock in Redis lets one of them send the periodic tasks, even when a killed worker leaves
its beat child running, and another takes over when that beat is gone."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.conf import settings

from tests.processes import ROOT, server_env, wait_until

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis")

PROBE_INTERVAL_S = 0.5
PROBE = re.compile(rb"Task routing\.tasks\.probe_endpoints\[[^\]]+\] received")


class Worker:
    """`celery -A beastmode worker -B` in a session of its own, logging to a file."""

    def __init__(self, name: str, log_dir: Path) -> None:
        self.log_path = log_dir / f"{name}.log"
        env = {
            **server_env(),
            "BEASTMODE_ENDPOINT_PROBE_INTERVAL_S": str(PROBE_INTERVAL_S),
            "BEASTMODE_BEAT_MAX_INTERVAL_S": "1",  # a dead beat's lock expires within 5 s
        }
        args = [sys.executable, "-m", "celery", "-A", "beastmode", "worker", "-B",
                "--concurrency", "1", "--loglevel", "INFO", "-n", f"{name}@%h",
                "--schedule", str(log_dir / f"{name}-schedule")]  # fmt: skip
        with self.log_path.open("wb") as log:
            self.popen = subprocess.Popen(
                args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def log(self) -> bytes:
        return self.log_path.read_bytes()

    def probes(self) -> int:
        return len(PROBE.findall(self.log()))

    def beats(self) -> bool:
        return b"beat: Acquired lock" in self.log()

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop()


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    yield client
    client.close()


def probes_per_second(workers: list[Worker], seconds: float) -> float:
    before = sum(w.probes() for w in workers)
    time.sleep(seconds)
    return (sum(w.probes() for w in workers) - before) / seconds


def test_two_workers_with_embedded_beats_send_each_periodic_task_once(
    workers: list[Worker], tmp_path: Path, transactional_db: None
) -> None:
    workers += [Worker("one", tmp_path), Worker("two", tmp_path)]
    wait_until(lambda: all(w.probes() for w in workers) or any(w.beats() for w in workers), 30)
    wait_until(lambda: sum(w.probes() for w in workers) >= 3, 30)

    rate = probes_per_second(workers, 4)

    assert rate <= 1.5 / PROBE_INTERVAL_S, f"{rate:.1f} probes/s: two beats sent them"
    assert [w.beats() for w in workers].count(True) == 1, "one beat holds the lock"


def test_a_beat_orphaned_by_a_killed_worker_stays_the_only_one_and_is_replaced_when_gone(
    workers: list[Worker], tmp_path: Path, transactional_db: None, broker: redis.Redis
) -> None:
    workers += [Worker("first", tmp_path)]
    wait_until(lambda: workers[0].beats() and workers[0].probes() >= 2, 30)
    os.kill(workers[0].popen.pid, signal.SIGKILL)  # the worker dies; its beat child lives on
    workers[0].popen.wait(timeout=10)
    workers.append(Worker("second", tmp_path))
    wait_until(lambda: b"second@" in workers[1].log() and b" ready." in workers[1].log(), 30)
    wait_until(lambda: broker.llen("celery") == 0, 10)  # what the beat sent meanwhile, done

    rate = probes_per_second(workers, 3)
    assert not workers[1].beats() and rate <= 1.5 / PROBE_INTERVAL_S, "still one beat"

    os.killpg(workers[0].popen.pid, signal.SIGKILL)  # the orphans too: no beat holds the lock
    wait_until(workers[1].beats, timeout_s=15)  # the lock expires; the second beat takes it
    wait_until(lambda: workers[1].probes() >= 2, timeout_s=10)
