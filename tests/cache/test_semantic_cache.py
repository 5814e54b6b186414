"""Semantic matching through the live gateway: paraphrases hit, near-misses never do."""

import time

import pytest
from django.test import Client as BrowserClient

from cache.models import SemanticPair
from gateway import warming
from tests.cache.test_exact_cache import ask, stored
from tests.personas import Client, ModelFactory, record_for
from tests.processes import Process, start_gateway, stop_process, wait_until

pytestmark = pytest.mark.embedded

QUESTION = "What is the capital city of France?"
PARAPHRASE = "What's the capital of France?"


def prime(gateway: Process, client: Client, model: str, text: str = QUESTION) -> None:
    assert ask(gateway, client, model, text).headers["x-beastmode-cache"] == "miss"
    wait_until(lambda: stored(model) >= 1)


def test_a_paraphrase_is_served_the_cached_answer_with_its_similarity(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("", semantic="on")
    prime(gateway, alice, model)

    reply = ask(gateway, alice, model, PARAPHRASE)

    assert reply.headers["x-beastmode-cache"] == "semantic"
    similarity = float(reply.headers["x-beastmode-similarity"])
    assert 0.95 <= similarity <= 1
    assert reply.json()["choices"][0]["message"]["content"].endswith(QUESTION)
    record = record_for(reply.headers["x-request-id"])
    assert (record.cache_outcome, record.cache_similarity) == ("semantic", similarity)
    assert record.saved_tokens_out > 0 and record.cost_saved_usd > 0
    pair = wait_until(lambda: SemanticPair.objects.filter(request_id=record.request_id).first())
    assert pair.served and pair.cached_key == record.cache_entry_key


@pytest.mark.parametrize(
    "near_miss",
    [
        "What is the capital city of Germany?",
        "What is not the capital city of France?",
        "What was the capital city of France in 1200?",
        "What is the capital city of France? Answer in 3 words.",
    ],
)
def test_near_misses_are_refused(
    gateway: Process, alice: Client, model_with: ModelFactory, near_miss: str
) -> None:
    model = model_with("", semantic="on")
    prime(gateway, alice, model)
    assert ask(gateway, alice, model, near_miss).headers["x-beastmode-cache"] == "miss"


def test_prompts_in_other_languages_are_matched_exactly_only(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    """The embedder reads English: it scores these two different questions (open / close a
    bank account) 0.97, and the guards cannot read Portuguese."""
    model = model_with("", semantic="on")
    prime(gateway, alice, model, "Como faço para abrir uma conta no banco?")

    other = ask(gateway, alice, model, "Como faço para fechar uma conta no banco?")
    same = ask(gateway, alice, model, "Como faço para abrir uma conta no banco?")

    assert other.headers["x-beastmode-cache"] == "miss"
    assert same.headers["x-beastmode-cache"] == "exact"


def test_semantic_hits_never_cross_tenants_or_parameters(
    gateway: Process, alice: Client, bob: Client, model_with: ModelFactory
) -> None:
    model = model_with("", model_name="bob-only", semantic="on")
    prime(gateway, alice, model)

    assert ask(gateway, bob, model, PARAPHRASE).headers["x-beastmode-cache"] == "miss"
    reply = ask(gateway, alice, model, PARAPHRASE, temperature=0.1)
    assert reply.headers["x-beastmode-cache"] == "miss"


def test_the_system_prompt_is_part_of_what_is_compared(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("", semantic="on")
    prime(gateway, alice, model)
    system = {"role": "system", "content": "You are a pirate. Always answer in pirate speak."}
    reply = ask(gateway, alice, model, PARAPHRASE,
                messages=[system, {"role": "user", "content": PARAPHRASE}])  # fmt: skip
    assert reply.headers["x-beastmode-cache"] == "miss"


def test_tool_turns_skip_semantic_matching(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("", semantic="on")
    turns = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "Paris"},
    ]  # fmt: skip
    ask(gateway, alice, model, messages=turns)
    wait_until(lambda: stored(model) == 1)
    paraphrased = [{**turns[0], "content": PARAPHRASE}, *turns[1:]]
    assert ask(gateway, alice, model, messages=paraphrased).headers["x-beastmode-cache"] == "miss"


def test_a_long_system_prompt_is_matched_exactly_and_the_questions_by_similarity(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    """The embedder reads the first 256 tokens: with the system prompt in the compared
    text, every question after a long system prompt embedded the same (cosine 1.0) and
    was served the first question's answer."""
    model = model_with("", semantic="on")
    policy = "You answer for ACME support. Be polite, cite the policy section. " * 25
    system = {"role": "system", "content": policy}

    def asking(question: str, instructions: dict = system) -> list[dict]:
        return [instructions, {"role": "user", "content": question}]

    ask(gateway, alice, model, messages=asking(QUESTION))
    wait_until(lambda: stored(model) == 1)
    other = ask(gateway, alice, model, messages=asking("How do I reset my password?"))
    assert other.headers["x-beastmode-cache"] == "miss"
    wait_until(lambda: stored(model) == 2)
    assert ask(gateway, alice, model, messages=asking(PARAPHRASE)).headers[
        "x-beastmode-cache"] == "semantic"  # fmt: skip
    changed = {"role": "system", "content": policy + " Answer in French."}
    reply = ask(gateway, alice, model, messages=asking(PARAPHRASE, changed))
    assert reply.headers["x-beastmode-cache"] == "miss"


def test_follow_ups_after_the_same_history_are_compared_on_their_own(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    """Embedded with a shared first exchange, "What is its population?" and "What is its
    area?" scored 0.97 and one was served the other's answer. Earlier turns are now matched
    exactly and the last turn by similarity."""
    model = model_with("", semantic="on")
    paris = "Paris is the capital and largest city of France, on the Seine. " * 3

    def after(history_question: str, follow_up: str) -> list[dict]:
        return [
            {"role": "user", "content": history_question},
            {"role": "assistant", "content": paris},
            {"role": "user", "content": follow_up},
        ]

    ask(gateway, alice, model, messages=after("Tell me about Paris.", "What is its population?"))
    wait_until(lambda: stored(model) == 1)
    area = ask(gateway, alice, model, messages=after("Tell me about Paris.", "What is its area?"))
    assert area.headers["x-beastmode-cache"] == "miss"
    wait_until(lambda: stored(model) == 2)
    reworded = after("Tell me about Paris.", "What's its population?")
    assert ask(gateway, alice, model, messages=reworded).headers["x-beastmode-cache"] == (
        "semantic"
    )
    other_history = after("Tell me about Lyon.", "What's its population?")
    assert ask(gateway, alice, model, messages=other_history).headers["x-beastmode-cache"] == (
        "miss"
    )


def test_conversations_longer_than_the_embedder_reads_are_matched_exactly_only(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("", semantic="on")
    document = "Quarterly report. Revenue grew in every region. " * 40
    ask(gateway, alice, model, f"{document}\nIs the tone formal?")
    wait_until(lambda: stored(model) == 1)
    reply = ask(gateway, alice, model, f"{document}\nIs the data reliable?")  # no guard sees it
    assert reply.headers["x-beastmode-cache"] == "miss"


def test_images_audio_and_files_skip_semantic_matching(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    """The same words about another picture are another question: the embedding sees only
    the words, so conversations with non-text parts are matched exactly or not at all."""
    model = model_with("", semantic="on")

    def about(image_url: str) -> list[dict]:
        return [{"role": "user", "content": [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": image_url}},
        ]}]  # fmt: skip

    ask(gateway, alice, model, messages=about("https://example.com/cat.png"))
    wait_until(lambda: stored(model) == 1)
    other = ask(gateway, alice, model, messages=about("https://example.com/invoice.png"))
    assert other.headers["x-beastmode-cache"] == "miss"
    same = ask(gateway, alice, model, messages=about("https://example.com/cat.png"))
    assert same.headers["x-beastmode-cache"] == "exact"


def test_off_mode_never_matches_semantically(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("", semantic="off")
    prime(gateway, alice, model)
    assert ask(gateway, alice, model, PARAPHRASE).headers["x-beastmode-cache"] == "miss"


def test_shadow_mode_records_the_would_be_hit_but_serves_upstream(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("", semantic="shadow")
    prime(gateway, alice, model)

    reply = ask(gateway, alice, model, PARAPHRASE)

    assert reply.headers["x-beastmode-cache"] == "miss"
    assert reply.json()["choices"][0]["message"]["content"].endswith(PARAPHRASE)
    record = record_for(reply.headers["x-request-id"])
    assert record.cache_outcome == "shadow" and record.cache_similarity >= 0.95
    pair = wait_until(lambda: SemanticPair.objects.filter(request_id=record.request_id).first())
    assert not pair.served and pair.asked_text == f"user: {PARAPHRASE}"


def test_a_restarted_gateway_rebuilds_its_index_from_l3(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("", semantic="on")
    prime(gateway, alice, model)
    fresh = start_gateway("semantic-restart")
    try:
        wait_until(lambda: ask(fresh, alice, model, PARAPHRASE, cache={"no-store": True})
                   .headers["x-beastmode-cache"] == "semantic", timeout_s=15)  # fmt: skip
    finally:
        stop_process(fresh)


def test_marking_a_semantic_hit_false_evicts_the_answer_and_keeps_the_pair(
    gateway: Process, alice: Client, model_with: ModelFactory, admin_browser: BrowserClient
) -> None:
    model = model_with("", semantic="on")
    prime(gateway, alice, model)
    hit = ask(gateway, alice, model, PARAPHRASE)
    pair = wait_until(
        lambda: SemanticPair.objects.filter(request_id=hit.headers["x-request-id"]).first()
    )

    admin_browser.post("/admin/cache/semanticpair/",
                       {"action": "mark_false", "_selected_action": [pair.id]})  # fmt: skip

    pair.refresh_from_db()
    assert pair.marked_false and stored(model) == 0
    wait_until(lambda: ask(gateway, alice, model, PARAPHRASE, cache={"no-store": True})
               .headers["x-beastmode-cache"] == "miss")  # fmt: skip
    assert SemanticPair.objects.filter(pk=pair.pk, marked_false=True).exists(), "kept"


def test_a_pair_marked_false_is_never_matched_again_until_unmarked(
    gateway: Process, alice: Client, model_with: ModelFactory, admin_browser: BrowserClient
) -> None:
    """Marking only evicted the answer: once the question was cached again, the same
    paraphrase got the same false hit."""
    model = model_with("", semantic="on")
    prime(gateway, alice, model)
    hit = ask(gateway, alice, model, PARAPHRASE)
    assert hit.headers["x-beastmode-cache"] == "semantic"
    pair = wait_until(
        lambda: SemanticPair.objects.filter(request_id=hit.headers["x-request-id"]).first()
    )
    admin_browser.post("/admin/cache/semanticpair/",
                       {"action": "mark_false", "_selected_action": [pair.id]})  # fmt: skip
    wait_until(lambda: paraphrase_is(gateway, alice, model, "miss"))

    prime(gateway, alice, model)  # the question is cached again

    assert paraphrase_is(gateway, alice, model, "miss")
    admin_browser.post("/admin/cache/semanticpair/",
                       {"action": "unmark_false", "_selected_action": [pair.id]})  # fmt: skip
    wait_until(lambda: paraphrase_is(gateway, alice, model, "semantic"))


def test_an_answer_refreshed_by_another_process_keeps_matching(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    """A refresh (a warming worker) upserts the row, which keeps its id: the gateway's
    sync followed new ids only, kept the old expiry and stopped matching the answer."""
    model = model_with("", semantic="on")
    first = ask(gateway, alice, model, QUESTION, cache={"ttl": 4})
    first_expired_at = time.monotonic() + 4.2
    entry_key = record_for(first.headers["x-request-id"]).cache_entry_key
    wait_until(lambda: stored(model) == 1)
    time.sleep(2)  # the refresh keeps the 4 s lifetime: it ends 2 s after the first one

    assert warming.refresh_expiring()[entry_key] == "stored"  # here: another process

    time.sleep(max(0.0, first_expired_at - time.monotonic()))
    wait_until(lambda: paraphrase_is(gateway, alice, model, "semantic"))


def paraphrase_is(gateway: Process, client: Client, model: str, outcome: str) -> bool:
    reply = ask(gateway, client, model, PARAPHRASE, cache={"no-store": True})
    return reply.headers["x-beastmode-cache"] == outcome
