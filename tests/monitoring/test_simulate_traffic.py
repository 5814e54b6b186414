"""`manage.py simulate_traffic`: paced traffic through the live gateway that moves every
dashboard figure, one request record per request sent, clear errors, a clean Ctrl-C."""

import io
import itertools
import json
import re
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass

import pytest
from django.core.management import CommandError, call_command

from cache.keys import conversation_text
from cache.semantic.embedder import get_embedder
from cache.semantic.guards import refusal_reason
from cache.semantic.similarity import DEFAULT_THRESHOLD, min_cosine
from devtools import traffic_mix
from monitoring.models import RequestRecord
from tests.personas import Client, ModelFactory
from tests.processes import ROOT, Process, free_port, server_env, wait_until

pytestmark = pytest.mark.embedded


@dataclass
class Summary:
    sent: int
    achieved_rps: float
    run_tag: str
    text: str

    def records(self) -> list[RequestRecord]:
        return list(RequestRecord.objects.filter(request_id__startswith=f"sim-{self.run_tag}-"))


def summary_of(output: str) -> Summary:
    match = re.search(r"Sent (\d+) requests in [\d.]+ s: ([\d.]+)/s .*Request ids sim-(\w+)-\*",
                      output)  # fmt: skip
    assert match, output
    return Summary(int(match[1]), float(match[2]), match[3], output)


def simulate(gateway: Process, *args: str) -> Summary:
    out = io.StringIO()
    call_command("simulate_traffic", "--base-url", f"{gateway.url}/v1", *args, stdout=out)
    return summary_of(out.getvalue())


def all_recorded(summary: Summary) -> list[RequestRecord]:
    """The run's records, once the gateway's batch writer has written all of them."""
    return wait_until(lambda: len(records := summary.records()) == summary.sent and records)


def text_of(body: bytes) -> str:
    return conversation_text(json.loads(body)["messages"])


# --- through the live gateway -------------------------------------------------------------


def test_a_run_leaves_one_record_per_request_and_moves_every_figure(
    gateway: Process, model_with: ModelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BEASTMODE_KEY", raising=False)  # as just after `make run`
    model = model_with("", semantic="on")
    failing = model_with("status/503")

    summary = simulate(gateway, "--model", model, "--failing-model", failing,
                       "--rps", "20", "--duration", "2", "--seed", "7")  # fmt: skip

    assert "Created a throw-away service key" in summary.text
    assert 28 <= summary.sent <= 40  # 40 on schedule; a slow box may fall behind
    assert 14 <= summary.achieved_rps <= 21
    records = all_recorded(summary)
    assert {r.service_key_name for r in records} == {"simulate-traffic"}
    cache = Counter(r.cache_outcome for r in records if r.model == model and r.status_code == 200)
    assert cache["miss"] and cache["exact"] and cache["semantic"], cache
    assert any(r.stream for r in records if r.status_code == 200)
    errors = Counter(r.error_class for r in records if r.error_class)
    assert {"model_not_found", "invalid_json", "invalid_request"} <= set(errors), errors
    upstream = {r.error_class for r in records if r.outcome == "upstream_error"}
    assert upstream and upstream <= {"upstream_server_error", "circuit_open"}, errors


def test_paraphrases_without_semantic_matching_are_misses_and_the_summary_says_why(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("")  # semantic off, like the demo model of `make run`

    summary = simulate(gateway, "--key", alice.key, "--model", model,
                       "--rps", "20", "--duration", "1.5", "--seed", "7")  # fmt: skip

    assert not any(r.cache_outcome == "semantic" for r in all_recorded(summary))
    assert "turn the model's semantic mode on" in summary.text


def test_an_unreachable_gateway_is_a_clear_error() -> None:
    with pytest.raises(CommandError, match=r"Cannot reach BeastMode at http://127\.0\.0\.1"):
        call_command("simulate_traffic", "--base-url", f"http://127.0.0.1:{free_port()}/v1",
                     "--key", "bm-anything")  # fmt: skip


def test_a_refused_key_or_a_missing_model_is_a_clear_error(gateway: Process, alice: Client) -> None:
    with pytest.raises(CommandError, match="refused the key: Incorrect API key"):
        simulate(gateway, "--key", "bm-not-a-real-key")
    with pytest.raises(CommandError, match="no model 'no-such-demo'"):
        simulate(gateway, "--key", alice.key, "--model", "no-such-demo")


def test_ctrl_c_stops_sending_waits_for_answers_and_reports(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("delay/100")  # answers still in flight when Ctrl-C comes
    command = [sys.executable, "manage.py", "simulate_traffic", "--base-url", f"{gateway.url}/v1",
               "--key", alice.key, "--model", model, "--rps", "20", "--duration", "30"]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, env=server_env(), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert process.stdout is not None
    assert "Ctrl-C stops" in process.stdout.readline()
    wait_until(lambda: RequestRecord.objects.filter(model=model).count() >= 5, timeout_s=10)

    process.send_signal(signal.SIGINT)
    output, errors = process.communicate(timeout=10)

    assert process.returncode == 0, errors
    summary = summary_of(output)
    assert "interrupted" in output and 5 <= summary.sent < 100
    assert not any(r.outcome == "client_disconnected" for r in all_recorded(summary))


# --- the traffic itself --------------------------------------------------------------------


def test_every_paraphrase_is_one_the_semantic_cache_serves() -> None:
    pairs = [(conversation_text([{"role": "user", "content": p}]),
              conversation_text([{"role": "user", "content": q}]))
             for q, paraphrases in traffic_mix.POPULAR.items() for p in paraphrases]  # fmt: skip
    vectors = get_embedder().embed([text for pair in pairs for text in pair])
    for i, (asked, cached) in enumerate(pairs):
        cosine = float(vectors[2 * i] @ vectors[2 * i + 1])
        assert cosine >= min_cosine(DEFAULT_THRESHOLD), (asked, cached, cosine)
        assert refusal_reason(asked, cached) is None, (asked, cached)


def test_fresh_prompts_never_match_each_other_or_a_popular_prompt() -> None:
    plan = traffic_mix.plan_requests(model="demo", failing_model="", seed=1)
    fresh = [text_of(p.body) for p in itertools.islice(plan, 400) if p.kind == "fresh"]
    popular = [conversation_text([{"role": "user", "content": q}]) for q in traffic_mix.POPULAR]
    assert len(set(fresh)) == len(fresh)
    for asked, cached in itertools.combinations(fresh + popular, 2):
        if asked in fresh:
            assert refusal_reason(asked, cached) == "numbers", (asked, cached)


def test_every_deck_holds_the_whole_mix_and_a_seed_replays_it() -> None:
    def first(n: int, seed: int, failing_model: str = "") -> list[traffic_mix.Planned]:
        plan = traffic_mix.plan_requests(model="demo", failing_model=failing_model, seed=seed)
        return list(itertools.islice(plan, n))

    assert first(60, seed=3) == first(60, seed=3) != first(60, seed=4)
    size = traffic_mix.DECK_SIZE
    for failing_model in ("", "broken"):
        requests = first(3 * size, seed=3, failing_model=failing_model)
        for deck in (requests[i : i + size] for i in range(0, len(requests), size)):
            kinds = Counter("popular" if p.kind == "paraphrase" else p.kind for p in deck)
            assert kinds["unknown_model"] == kinds["bad_body"] == 1
            assert kinds["failing"] == (2 if failing_model else 0)
            assert sum(p.stream for p in deck) == 5
