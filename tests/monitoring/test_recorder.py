"""Every request produces exactly one record, under concurrency and with failing upstreams."""

import itertools
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitoring import recorder
from monitoring.models import RequestRecord
from monitoring.records import request_row
from tests.personas import Client, ModelFactory, record_for
from tests.processes import Process, Reply, http, wait_until


def metric(text: str, name: str, **labels: str) -> float:
    """A sample's value in an exposition (0 if absent), whatever the order of its labels."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def chat(gateway: Process, client: Client, model: str, question: str) -> Reply:
    body = {"model": model, "messages": [{"role": "user", "content": question}]}
    return http(f"{gateway.url}/v1/chat/completions", method="POST", key=client.key, body=body)


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
        for m in (ok, flaky, broken, slow, "unknown", "")  # (no-such-model counts as unknown)
        for o in ("success", "client_error", "auth_error", "upstream_error")
    )
    assert counted == 300
    assert metric(after, "beastmode_records_written_total") - metric(
        before, "beastmode_records_written_total"
    ) >= 300 - metric(after, "beastmode_records_pending")


def test_metrics_expose_genai_histograms_cache_outcomes_and_savings(
    gateway: Process, fake_upstream: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("")
    request_ids = []
    for question in ("q1", "q2", "q3", "q1", "q1"):  # three misses, then two exact hits
        request_ids.append(chat(gateway, alice, model, question).headers["x-request-id"])
    first = record_for(request_ids[0])
    wait_until(lambda: record_for(request_ids[-1]))
    text = http(f"{gateway.url}/metrics").body.decode()

    assert metric(text, "beastmode_requests_total", model=model, outcome="success") == 5
    served = {"gen_ai_operation_name": "chat", "gen_ai_request_model": model, "error_type": ""}
    assert "# TYPE gen_ai_server_request_duration_seconds histogram" in text
    assert metric(text, "gen_ai_server_request_duration_seconds_count", **served) == 5
    assert metric(text, "gen_ai_server_request_duration_seconds_bucket", **served, le="+Inf") == 5
    upstream = {
        "gen_ai_operation_name": "chat", "gen_ai_provider_name": "openai",
        "gen_ai_request_model": f"{model}-ep0-model", "server_address": fake_upstream.url[7:],
        "endpoint": f"{model}-ep0", "error_type": "",
    }  # fmt: skip
    assert metric(text, "gen_ai_client_operation_duration_seconds_count", **upstream) == 3
    output = {"gen_ai_operation_name": "chat", "gen_ai_request_model": model,
              "gen_ai_token_type": "output"}  # fmt: skip
    assert metric(text, "gen_ai_client_token_usage_sum", **output) == 3 * first.tokens_out

    cache = "beastmode_cache_requests_total"
    assert metric(text, cache, model=model, kind="miss", tier="") == 3
    assert metric(text, cache, model=model, kind="exact", tier="L1") == 2
    saved = metric(text, "beastmode_cost_saved_usd_total", model=model)
    assert saved == pytest.approx(2 * first.cost_usd, rel=1e-3) and saved > 0
    tokens_saved = metric(text, "beastmode_tokens_saved_total", model=model, type="output")
    assert tokens_saved == 2 * first.tokens_out


def test_upstream_failures_are_labelled_with_their_error_type(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("status/503")
    reply = chat(gateway, alice, model, "hi")
    error_type = record_for(reply.headers["x-request-id"]).error_class
    text = http(f"{gateway.url}/metrics").body.decode()

    assert error_type and reply.status == 502
    served = {"gen_ai_operation_name": "chat", "gen_ai_request_model": model}
    assert metric(text, "gen_ai_server_request_duration_seconds_count", **served,
                  error_type=error_type) == 1  # fmt: skip
    assert metric(text, "beastmode_requests_total", model=model, outcome="upstream_error") == 1


def test_an_answer_with_absurd_usage_is_recorded_and_holds_back_no_other_record(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    """A token count no column can hold used to make its whole batch unwritable, and the
    writer retried that batch forever."""
    huge, garbage, ok = model_with("usage/1e30"), model_with("usage/lots"), model_with("")
    with ThreadPoolExecutor(max_workers=3) as pool:
        replies = list(pool.map(lambda m: chat(gateway, alice, m, "count me"), [huge, garbage, ok]))
    assert [reply.status for reply in replies] == [200, 200, 200]
    records = [record_for(reply.headers["x-request-id"]) for reply in replies]
    assert [r.tokens_in for r in records[:2]] == [2**31 - 1, 0]
    assert records[2].tokens_in > 0


@pytest.mark.embedded
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("microsecond", [123456, 0])  # 0: Django's text has no fraction
def test_a_written_record_reads_back_as_it_was_submitted_on_either_database(
    microsecond: int,
) -> None:
    """The database unpacks the records' JSON itself (Postgres or SQLite): every kind of
    column must come back as submitted, and the time must compare as Django's own do."""
    created_at = datetime(2026, 11, 24, 12, 30, 5, microsecond, tzinfo=UTC)
    submitted = {
        "request_id": "req-roundtrip", "created_at": created_at, "path": "/v1/chat/completions",
        "service_key_id": 2**40, "service_key_name": "naïve ✓ service", "model": "m",
        "stream": True, "attempts": 2, "fallbacks": 1,
        "attempt_log": [{"endpoint": "a", "error_class": "upstream_5xx", "upstream_status": 502,
                         "latency_ms": 1.5}, {"endpoint": "b", "error_class": None,
                                              "upstream_status": 200, "latency_ms": 0.25}],
        "outcome": "success", "status_code": 200, "latency_ms": 3.25, "cost_usd": 1.2e-6,
        "cache_outcome": "miss", "cache_similarity": None,
        "error_message": 'quotes " and \\ backslashes', "error_tips": ["one", "two"],
    }  # fmt: skip
    recorder._pending.append(recorder._pack(submitted))
    recorder.flush()

    record = RequestRecord.objects.get(request_id="req-roundtrip")
    for name, value in submitted.items():
        assert getattr(record, name) == value, name
    assert (record.is_async_job, record.tokens_in, record.cache_tier) == (False, 0, "")  # defaults
    just_before = created_at - timedelta(microseconds=1)
    ours = RequestRecord.objects.filter(request_id="req-roundtrip")  # flush() writes others' too
    assert ours.filter(created_at__gt=just_before, created_at__lte=created_at)
    assert not ours.filter(created_at__gt=created_at)


@pytest.mark.embedded
@pytest.mark.django_db(transaction=True)
def test_a_record_of_hostile_text_is_written_escaped_and_cut_to_its_columns() -> None:
    """What a client chose (method, path, model, the error quoting them) may hold NUL and
    lone surrogates and be longer than its column: the record keeps it escaped and cut,
    and the database takes it (no record set aside)."""
    recorder.submit(
        request_row(
            request_id="req-hostile", created_at=datetime.now(UTC), method="PROPPATCHXYZ",
            path="/v1/jobs/\x00" + "x" * 300, model="m\ud800\x00", outcome="client_error",
            status_code=404, latency_ms=1.0, error_message="No job '\x00\ud800'",
            error_tips=["tip \ud800"],
        )
    )  # fmt: skip
    recorder.flush()

    record = RequestRecord.objects.get(request_id="req-hostile")
    assert record.method == "PROPPAT…"
    assert record.path.startswith("/v1/jobs/\\x00xxx") and len(record.path) == 200
    assert record.model == "m\\ud800\\x00"
    assert record.error_message == "No job '\\x00\\ud800'"
    assert record.error_tips == ["tip \\ud800"]
