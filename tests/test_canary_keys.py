"""Secrets by construction: canary upstream keys, quoted back in pieces by the upstream,
never reach a client, a record, a probe, a job, a log, the dashboard or /metrics.

The drill runs through a real gateway process (its own, with a metrics token and a log of
its own), a worker for the async job, and the fake upstream's /leakkey mode, which quotes
the request's key without its prefixes and its last 19 characters, as careless providers
do. Then every sink is scanned for any 8 consecutive characters of a canary.
"""

import secrets
import string
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.test import Client as BrowserClient

from beastmode.lib.redaction import MIN_FRAGMENT
from monitoring.models import RequestRecord
from monitoring.websocket_urls import websocket_application
from routing import health
from routing.models import AsyncJob, EndpointProbe, ModelEndpoint
from tests.personas import (
    Client,
    make_client,
    make_endpoint,
    make_model,
    record_for,
    wait_for_key,
    wait_for_model,
)
from tests.processes import Process, http, server_env, start_gateway, stop_process, wait_until

pytestmark = pytest.mark.embedded

_ALPHABET = string.ascii_letters + string.digits
CANARY_PREFIXED = "sk-canary-" + "".join(secrets.choice(_ALPHABET) for _ in range(24))
CANARY_BARE = "".join(secrets.choice(_ALPHABET) for _ in range(32))  # no prefix at all
METRICS_TOKEN = "canary-drill-token"


def fragments(key: str) -> set[str]:
    return {key[i : i + MIN_FRAGMENT] for i in range(len(key) - MIN_FRAGMENT + 1)}


FRAGMENTS = fragments(CANARY_PREFIXED) | fragments(CANARY_BARE)


def leaks(text: str) -> list[str]:
    """Every 8-character piece of a canary in `text`."""
    return [fragment for fragment in sorted(FRAGMENTS) if fragment in text]


@pytest.fixture(scope="module")
def node(django_db_setup: None, django_db_blocker: Any) -> Iterator[Process]:
    """A gateway of this module's own: the metrics token on, and a log only the drill writes."""
    process = start_gateway(
        "canary", env={**server_env(), "BEASTMODE_METRICS_TOKEN": METRICS_TOKEN}
    )
    yield process
    stop_process(process)


@pytest.fixture
def carol(transactional_db: None, node: Process) -> Client:
    """Carol's service: calls the models whose upstream quotes keys back."""
    return wait_for_key(node, make_client("carol-service"))


@pytest.fixture
def in_memory_layer(settings: Any) -> None:
    """The websocket's own event loop; a Redis layer's connections would outlive it."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


def leaky_model(node: Process, client: Client, fake_upstream: Process, api_key: str) -> str:
    name = f"leaky-{'prefixed' if api_key.startswith('sk-') else 'bare'}"
    endpoint = make_endpoint(f"{name}-ep", f"{fake_upstream.url}/leakkey/v1", api_key=api_key)
    make_model(name, [endpoint])
    wait_for_model(node, client, name)
    return name


@async_to_sync
async def websocket_snapshot(browser: BrowserClient) -> str:
    cookie = f"sessionid={browser.cookies['sessionid'].value}".encode()
    communicator = WebsocketCommunicator(
        websocket_application,
        "/ws/monitoring/",
        headers=[(b"host", b"127.0.0.1"), (b"origin", b"http://127.0.0.1"), (b"cookie", cookie)],
    )
    accepted, _ = await communicator.connect(timeout=10)
    assert accepted
    await communicator.send_json_to({"window": "15m"})
    await communicator.receive_from(timeout=10)  # the 1h window's, sent on connect
    text = await communicator.receive_from(timeout=10)
    await communicator.disconnect()
    return str(text)


def test_canary_keys_reach_no_sink_after_a_drill(
    node: Process,
    carol: Client,
    fake_upstream: Process,
    celery_worker: Process | None,
    admin_browser: BrowserClient,
    in_memory_layer: None,
) -> None:
    seen: dict[str, str] = {}  # sink → everything it held
    request_ids = []
    for api_key in (CANARY_PREFIXED, CANARY_BARE):
        model = leaky_model(node, carol, fake_upstream, api_key)
        chat = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        sync = http(f"{node.url}/v1/chat/completions", method="POST", key=carol.key, body=chat)
        stream = http(f"{node.url}/v1/chat/completions", method="POST", key=carol.key,
                      body={**chat, "stream": True})  # fmt: skip
        submitted = http(f"{node.url}/v1/chat/completions", method="POST", key=carol.key,
                         headers={"X-BeastMode-Async": "true"}, body=chat)  # fmt: skip
        assert (sync.status, stream.status, submitted.status) == (400, 200, 202), sync.body
        job_id = submitted.json()["id"]
        job = wait_until(
            lambda job_id=job_id: (
                (view := http(f"{node.url}/v1/jobs/{job_id}", key=carol.key).json())["status"]
                == "failed"
                and view
            ),
            timeout_s=20,
        )
        assert job["error"]["code"] == "upstream_bad_request"  # the upstream was asked
        seen[f"client {model}"] = " ".join(r.body.decode() for r in (sync, stream, submitted))
        seen[f"job view {model}"] = str(job)
        request_ids += [r.headers["x-request-id"] for r in (sync, stream, submitted)]

    endpoint_ids = list(ModelEndpoint.objects.values_list("id", flat=True))
    probes = health.probe(endpoint_ids)  # as admin's "test connection" and the probe task
    assert not any(result.ok for result in probes)
    seen["probe results"] = str(probes)

    records = [record_for(request_id) for request_id in request_ids]
    assert {r.error_class for r in records} >= {"upstream_bad_request"}
    wait_until(lambda: RequestRecord.objects.filter(is_async_job=True, outcome="client_error")
               .count() == 2)  # fmt: skip
    seen["request records"] = str(list(RequestRecord.objects.values()))
    seen["endpoint probes"] = str(list(EndpointProbe.objects.values()))
    seen["async jobs"] = str(list(AsyncJob.objects.values()))
    token = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    seen["snapshot"] = http(f"{node.url}/monitoring/api/snapshot?window=15m", headers=token)\
        .body.decode()  # fmt: skip
    seen["metrics"] = http(f"{node.url}/metrics", headers=token).body.decode()
    seen["dashboard page"] = admin_browser.get("/monitoring").content.decode()
    seen["websocket"] = websocket_snapshot(admin_browser)
    for record in records:
        page = admin_browser.get(f"/admin/monitoring/requestrecord/{record.pk}/change/")
        seen[f"admin record {record.pk}"] = page.content.decode()
    seen["gateway log"] = node.log()
    if celery_worker is not None:  # embedded, the jobs ran in the gateway
        seen["worker log"] = celery_worker.log()

    # The quotes were there (the stream's failures are the dashboard's errors), redacted.
    assert "Incorrect API key provided: [redacted]" in seen["snapshot"]
    leaked = {sink: len(found) for sink, text in seen.items() if (found := leaks(text))}
    assert leaked == {}, f"8-character pieces of a canary, per sink: {leaked}"
