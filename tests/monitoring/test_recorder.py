"""Every request produces exactly one record, under concurrency and with failing upstreams."""

import itertools
import re
from concurrent.futures import ThreadPoolExecutor

from monitoring.models import RequestRecord
from tests.conftest import Client, ModelFactory, Process, http, wait_until


def metric(text: str, name: str, **labels: str) -> float:
    label_text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    series = f"{name}{{{label_text}}}" if labels else name
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def test_records_equal_requests_under_concurrency_with_failing_upstreams(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    ok = model_with("")
    flaky = model_with("status/500", "")  # primary fails, fallback answers
    broken = model_with("status/502")  # every attempt fails; its circuit opens midway
    slow = model_with("delay/50")
    kinds = itertools.cycle([
        (ok, {}), (flaky, {}), (broken, {}), (slow, {"stream": True}),
        ("no-such-model", {}), (ok, {"temperature": 9}),
    ])  # fmt: skip
    before = http(f"{gateway.url}/metrics").body.decode()

    def call(i: int) -> tuple[str, int]:
        model, extra = next(kinds)
        key = "bm-wrong-key" if i % 10 == 9 else alice.key
        body = {"model": model, "messages": [{"role": "user", "content": f"n{i}"}], **extra}
        reply = http(f"{gateway.url}/v1/chat/completions", method="POST", key=key, body=body)
        return reply.headers["x-request-id"], reply.status

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(call, range(300)))

    request_ids = {request_id for request_id, _ in results}
    assert len(request_ids) == 300
    assert {status for _, status in results} >= {200, 400, 401, 404, 502}
    wait_until(lambda: RequestRecord.objects.filter(request_id__in=request_ids).count() >= 300)
    records = RequestRecord.objects.filter(request_id__in=request_ids)
    assert records.count() == 300, "exactly one record per request"
    statuses = dict(records.values_list("request_id", "status_code"))
    assert all(statuses[request_id] == status for request_id, status in results)

    after = http(f"{gateway.url}/metrics").body.decode()
    counted = sum(
        metric(after, "beastmode_requests_total", model=m, outcome=o)
        - metric(before, "beastmode_requests_total", model=m, outcome=o)
        for m in (ok, flaky, broken, slow, "no-such-model", "")
        for o in ("success", "client_error", "auth_error", "upstream_error")
    )
    assert counted == 300
    assert metric(after, "beastmode_records_written_total") - metric(
        before, "beastmode_records_written_total"
    ) >= 300 - metric(after, "beastmode_records_pending")


def test_metrics_expose_a_latency_histogram_per_model(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("")
    for n in range(3):  # different questions: no cache hits
        http(f"{gateway.url}/v1/chat/completions", method="POST", key=alice.key,
             body={"model": model, "messages": [{"role": "user", "content": f"x{n}"}]})  # fmt: skip
    text = http(f"{gateway.url}/metrics").body.decode()

    assert "# TYPE beastmode_request_duration_seconds histogram" in text
    assert metric(text, "beastmode_request_duration_seconds_count", model=model) == 3
    assert metric(text, "beastmode_request_duration_seconds_bucket", model=model, le="+Inf") == 3
    assert metric(text, "beastmode_requests_total", model=model, outcome="success") == 3
    assert metric(text, "beastmode_tokens_total", model=model, type="output") == 3 * 4
