"""Semantic matching refuses near-misses: the must-not-hit set (zero hits), the guards, and
how a lookup chooses among its candidates."""

import json
from pathlib import Path

import pytest

from cache.semantic import similarity
from cache.semantic.embedder import get_embedder
from cache.semantic.english import is_english
from cache.semantic.guards import refusal_reason

PAIRS = json.loads((Path(__file__).parents[2] / "bench" / "must_not_hit.json").read_text())


def test_the_must_not_hit_set_has_no_hit_at_the_default_threshold() -> None:
    embedder = get_embedder()
    cached = embedder.embed([pair["cached"] for pair in PAIRS])
    asked = embedder.embed([pair["asked"] for pair in PAIRS])
    hits = [
        pair
        for pair, a, c in zip(PAIRS, asked, cached, strict=True)
        if is_english(pair["asked"])  # others are matched exactly only (cache/service.py)
        and similarity.choose(pair["asked"], [(pair["cached"], float(a @ c))]) is not None
    ]
    assert len(PAIRS) >= 60
    assert hits == []
    assert all(not is_english(p["asked"]) for p in PAIRS if p["why"] == "not English")


@pytest.mark.parametrize(
    ("asked", "cached"),
    [
        ("What's the capital of France?", "What is the capital city of France?"),
        ("How do I sort a dict by value in Python?", "How can I sort a Python dict by its values?"),
    ],
)
def test_plain_paraphrases_are_served(asked: str, cached: str) -> None:
    a, c = get_embedder().embed([asked, cached])
    assert similarity.choose(asked, [(cached, float(a @ c))]) == 0


def test_int8_products_keep_the_models_embeddings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedder multiplies in int8 on the package's weights; the similarity scale was
    calibrated on those embeddings, which must stay those of the model (fp32 products)."""
    from cache.semantic import embedder

    texts = [pair[key] for pair in PAIRS[:20] for key in ("asked", "cached")]
    int8 = embedder.Embedder().embed(texts)
    monkeypatch.setattr(embedder, "_matmul_on_int8_weights", lambda model: None)
    fp32 = embedder.Embedder().embed(texts)
    agreement = (int8 * fp32).sum(axis=1)
    assert agreement.min() > 0.98 and agreement.mean() > 0.99


def test_only_texts_the_model_reads_whole_are_embedded_for_matching() -> None:
    short, long = "user: What is the capital of France?", "user: " + "word " * 300
    whole = get_embedder().embed_whole([short, long])
    assert whole[1] is None  # 300+ tokens: what follows the cut would not count
    assert whole[0] is not None and float(whole[0] @ get_embedder().embed([short])[0]) > 0.9999


def test_a_refused_nearest_candidate_hides_the_farther_ones() -> None:
    """The nearest cached prompt differs from the question in a number, so the question is
    about that prompt's topic: a farther entry is no safer to serve."""
    asked = "What is 25% of 240?"
    refused, farther = ("What is 15% of 240?", 0.97), ("What is 25% of 240 rounded down?", 0.92)
    assert similarity.choose(asked, [farther], threshold=0.9) == 0
    assert similarity.choose(asked, [refused, farther], threshold=0.9) is None
    nearer = ("What's 25% of 240?", 0.98)
    assert similarity.choose(asked, [refused, farther, nearer], threshold=0.9) == 2


def test_of_near_identical_prompts_the_one_written_like_the_question_is_served() -> None:
    asked = "What does the `to_batches` method of `Table` return?"
    candidates = [
        ("What does the to_batches method of Table return?", 0.951),
        ("What does the `to_batches` method of `Table` give back?", 0.950),
    ]
    assert similarity.choose(asked, candidates) == 1


@pytest.mark.parametrize(
    ("asked", "cached", "reason"),
    [
        ("Which animals lack fins?", "Which animals have fins?", "negation"),
        ("It loads not only text but also audio.", "It loads text and audio.", None),
        ("Decide whether to cache it or not.", "Decide whether to cache it.", None),
        ("Extract it in non-streaming mode.", "Extract it without streaming.", None),
        ("In the absence of metadata, use folders.", "If there's no metadata, use folders.", None),
        ("Datasets for NLP tasks", "Datasets for Natural Language Processing tasks", None),
        ("A table loaded into RAM", "A table loaded into Random Access Memory", None),
        ("What is the capital of Austria?", "What is the capital of Australia?", "entities"),
        ("Is AWS cheaper?", "Is GCP cheaper?", "entities"),
        ("Load it in one line of code.", "Load it in a single line of code.", None),
        ("Explain recursion in one line.", "Explain recursion.", "constraints"),
        ("Formats such as CSV are read.", "Formats including CSV are read.", None),
        ("Who won the first season?", "Who won the second season?", "numbers"),
        ("How do I train for my first half marathon?", "How do I train for a half marathon?", None),
        ("Is coffee healthy?", "Is coffee unhealthy?", "negated_word"),
        ("What do you like and dislike in Agile?", "What do you dislike in Agile?", None),
        ("Set the size to a non-zero value.", "Set the size to nonzero.", None),
        ("How do I zoom in on a Mac?", "How do I zoom out on a Mac?", "opposites"),
        ("Why won't my iPod turn off?", "Why won't my iPod turn on?", "opposites"),
        ("How do I find out the size?", "How do I get the size in bytes?", None),
        ("What is the cheapest flight?", "What is the most expensive flight?", "opposites"),
        ("What is the weekly salary?", "What is the yearly salary?", "units"),
        ("How do I learn Python quickly?", "What is the fastest way to learn Python?", None),
        ('Is "He don\'t know." correct?', 'Is "He doesn\'t know." correct?', "quoted"),
        ("What does the `Table` class do?", "What does the Table class do?", None),
        ("What is print(2 ** 3)?", "What is print(2 * 3)?", "operators"),
        (
            "Explain: for i in range(9): print(i * i)",
            "Explain: for i in range(9): print(i)",
            "operators",
        ),
        ("Should I use C++ and/or Rust?", "Should I use C++ or Rust?", None),
        ("Translate: we meet in the afternoon.", "Translate: we meet in the morning.", "opposites"),
        (
            "Rename all .txt files in a folder to .md using Python.",
            "Rename all .md files in a folder to .txt using Python.",
            "order",
        ),
        (
            "Port this Python 2 code to Python 3, keeping the comments and docstrings.",
            "Keeping the comments and docstrings, port this Python 2 code to Python 3.",
            None,
        ),
        (
            "Write an email accepting the invitation.",
            "Write an email declining the invitation.",
            "opposites",
        ),
        ("Reverse a string in place.", "Reverse a list in place.", "opposites"),
        ("Reverse an array in place.", "Reverse a list in place.", None),
        ("Find the second highest salary.", "Find the highest salary.", "numbers"),
        ("Who won the second season?", "Who won the second season, the most watched?", None),
        ("Write code to read a file.", "Write code to write a file.", "opposites"),
        ("Write code to read a file.", "Write code that reads a file.", None),
        ("Parse dates like YYYY-MM-DD.", "Parse dates like DD/MM/YYYY.", "identifiers"),
        (
            "Visa rules for Indians travelling to Japan?",
            "Visa rules for Japanese travelling to India?",
            "order",
        ),
        ("Write a short poem about rain.", "Write a long poem about rain.", "opposites"),
        ("Explain DNS in simple terms.", "Explain DNS in plain terms.", None),
        ("What does get_user() return?", "What does get_users() return?", "identifiers"),
        ("Best movies of this year?", "Best movies of last year?", "opposites"),
        ("Do all birds fly?", "Do some birds fly?", "opposites"),
        ("Is informer.com legit?", "Is markets.com legit?", "identifiers"),
        ("How does datasets.list_datasets work?", "How does list_datasets() work?", None),
        ("How do I enable two-factor login?", "How do I turn on two factor login?", None),
        (
            "Give kids three facts about this animal. Animal: octopus",
            "Give kids three facts about this animal. Animal: penguin",
            "template_input",
        ),
        (
            "Summarize for a newsletter: Central bank raises rates",
            "Summarize for a newsletter: Central bank cuts rates",
            "opposites",
        ),
        (
            "You are a support bot. Customer question: How do I reset my password?",
            "You are a support bot. Customer question: How do I reset my password please?",
            None,
        ),
        (
            "Answer the following question: What is the capital of France?",
            "Answer the following question: What's the capital city of France?",
            None,
        ),
        ("Note: how do I bake bread?", "Note: how do I bake cookies?", None),
    ],
)
def test_guards_refuse_conflicts_and_pass_rewordings(
    asked: str, cached: str, reason: str | None
) -> None:
    assert refusal_reason(asked, cached) == reason
    assert refusal_reason(cached, asked) == reason  # every guard is symmetric
