"""Embedding the answers a model stored while its semantic matching was off.

Only answers stored with a vector are matched by similarity, and with semantic matching
off none gets one (cache/writer.py). When a model's mode goes from off to on or shadow,
`embed_unembedded` gives its unexpired L3 rows the vector the writer would have given
them, and moves their `updated_at`: the semantic sync of every process (which follows it,
cache/semantic/index_sync.py) then indexes them within seconds.
"""

from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from cache.models import CacheEntry
from cache.semantic import english, vector_index
from cache.semantic.embedder import get_embedder

BATCH_SIZE = 256  # rows read, embedded and written at a time (a row holds its prompt text)


@dataclass(frozen=True)
class Backfill:
    embedded: int
    left_unembedded: int  # not English, or longer than the embedder reads: matched exactly


def embed_unembedded(model: str, *, batch_size: int = BATCH_SIZE) -> Backfill:
    """Give the model's unexpired, semantic-eligible L3 rows without a vector the one the
    writer gives a stored answer (the same text, the same embedder call); rows the lookup
    never compares (not English, too long) keep none. Reads in batches by id."""
    embedded = left = 0
    after_id = 0
    while True:
        rows = list(
            CacheEntry.objects.filter(
                model=model,
                semantic_eligible=True,
                embedding__isnull=True,
                expires_at__gt=timezone.now(),
                id__gt=after_id,
            )
            .order_by("id")
            .values_list("id", "prompt_text")[:batch_size]
        )
        if not rows:
            break
        after_id = rows[-1][0]
        vectors = _embeddings(rows)
        _store(vectors)
        embedded += len(vectors)
        left += len(rows) - len(vectors)
    return Backfill(embedded=embedded, left_unembedded=left)


def settle_s() -> float:
    """How long after a switch every process plans with the new mode (a registry reload)
    and the answers planned before it have reached L3 (the writer's interval, and a
    second for its batch)."""
    return settings.REGISTRY_REFRESH_S + settings.CACHE_L3_WRITE_INTERVAL_S + 1.0


def _embeddings(rows: list[tuple[int, str]]) -> dict[int, bytes]:
    # The lookup compares English prompts only (CachePlan.semantic): others stay unindexed.
    english_rows = [(row_id, text) for row_id, text in rows if english.is_english(text)]
    if not english_rows:
        return {}
    vectors = get_embedder().embed_whole([text for _, text in english_rows])
    return {
        row_id: vector_index.to_bytes(vector)
        for (row_id, _), vector in zip(english_rows, vectors, strict=True)
        if vector is not None  # longer than the embedder reads whole
    }


def _store(vectors: dict[int, bytes]) -> None:
    """One UPDATE for the batch. A row stored again meanwhile has the same text (the key
    covers it), so the same vector; a row purged meanwhile is not brought back."""
    if not vectors:
        return
    written_at = timezone.now()
    CacheEntry.objects.bulk_update(
        [
            CacheEntry(id=row_id, embedding=embedding, updated_at=written_at)
            for row_id, embedding in vectors.items()
        ],
        ["embedding", "updated_at"],
    )
