"""The periodic Celery health probe: same upstream code and diagnosis as live traffic."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from routing import breaker, tasks
from routing.models import EndpointProbe
from tests.personas import make_endpoint
from tests.processes import ROOT, Process, free_port


def test_probe_task_records_each_endpoints_health_and_feeds_its_breaker(
    transactional_db: None, fake_upstream: Process
) -> None:
    healthy = make_endpoint("healthy", f"{fake_upstream.url}/v1")
    down = make_endpoint("down", f"http://127.0.0.1:{free_port()}/v1")
    make_endpoint("disabled", f"{fake_upstream.url}/v1", enabled=False)

    result = tasks.probe_endpoints.apply().get()

    assert result == {"healthy": True, "down": False}
    assert EndpointProbe.objects.get(endpoint=healthy).ok
    probe = EndpointProbe.objects.get(endpoint=down)
    assert (probe.ok, probe.error_class) == (False, "connection_refused")
    assert "'down'" in probe.message
    assert breaker.for_endpoint(down.id).consecutive_failures == 1


SCHEDULED_TASKS_OF_A_SERVER_PROCESS = """
import time
import beastmode.asgi  # as daphne and uvicorn load it; in the embedded default the beat starts
from beastmode.celery import app
wanted = {entry["task"] for entry in app.conf.beat_schedule.values()}
deadline = time.monotonic() + 20
while time.monotonic() < deadline and not wanted <= set(app.tasks):
    time.sleep(0.1)
print("missing:", sorted(wanted - set(app.tasks)))
"""


@pytest.mark.embedded
def test_the_embedded_beat_of_a_server_process_finds_every_scheduled_task(
    tmp_path: Path,
) -> None:
    """Probes, pruning and warming run in-process when there is no broker: every task of
    the schedule must be registered in a freshly started server process (the probe task's
    module was not, so endpoints were never probed in the embedded default)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEASTMODE_")}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    env.update(
        DJANGO_SETTINGS_MODULE="beastmode.settings", BEASTMODE_VAR_DIR=str(tmp_path),
        BEASTMODE_SECRET_KEY="embedded-beat-test-" + "x" * 40,
        BEASTMODE_ENCRYPTION_KEY=Fernet.generate_key().decode(),
    )  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", SCHEDULED_TASKS_OF_A_SERVER_PROCESS], env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "missing: []"
