"""The must-not-hit set: pairs an embedding blurs but whose answers differ. Zero hits."""

import json
from pathlib import Path

import pytest

from cache import similarity
from cache.embedder import get_embedder

PAIRS = json.loads((Path(__file__).parents[2] / "bench" / "must_not_hit.json").read_text())


def test_the_must_not_hit_set_has_no_hit_at_the_default_threshold() -> None:
    embedder = get_embedder()
    cached = embedder.embed([pair["cached"] for pair in PAIRS])
    asked = embedder.embed([pair["asked"] for pair in PAIRS])
    hits = [
        pair
        for pair, a, c in zip(PAIRS, asked, cached, strict=True)
        if similarity.choose(pair["asked"], [(pair["cached"], float(a @ c))]) is not None
    ]
    assert len(PAIRS) >= 60
    assert hits == []


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
    from cache import embedder

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
