"""The semantic index's life (cache/semantic/vector_index.py): flat → HNSW, removals, rebuilds,
bounds, expiry. Random unit vectors stand in for embeddings: each must find itself."""

import hashlib
import sys
import threading
import time

import numpy as np
import pytest

from cache.semantic import quantised, vector_index

DIM = 384


def random_vectors(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def best_key(
    index: vector_index.SemanticIndex, vector: np.ndarray, partition: str = "p"
) -> str | None:
    found = index.search(partition, vector, k=1)
    return found[0].key if found else None


@pytest.fixture
def small_hnsw(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vector_index, "HNSW_MIN_ENTRIES", 60)
    monkeypatch.setattr(vector_index, "DEAD_MIN", 10)


def test_vectors_are_kept_as_int8_codes_and_score_as_their_cosine() -> None:
    index = vector_index.SemanticIndex(DIM, max_entries=1000, background=False)
    v = random_vectors(200)
    for i in range(200):
        index.add("p", f"k{i}", time.time() + 60, v[i])
    found = index.search("p", v[7], k=4)
    assert found[0].key == "k7" and found[0].cosine == pytest.approx(1.0, abs=0.01)
    for candidate in found[1:]:
        i = int(candidate.key[1:])
        assert candidate.cosine == pytest.approx(float(v[7] @ v[i]), abs=0.01)
        assert candidate.cosine == pytest.approx(quantised.cosine(v[7], v[i]), abs=1e-5)
    assert index.nbytes() < 200 * 1024  # a byte per dimension, and the key and row arrays


def test_moving_to_hnsw_and_rebuilding_after_removals_keeps_every_live_vector(
    small_hnsw: None,
) -> None:
    index = vector_index.SemanticIndex(DIM, max_entries=1000, background=False)
    v = random_vectors(100)
    later = time.time() + 3600
    for i in range(100):
        index.add("p", f"k{i}", later, v[i])
    partition = index._partitions["p"]
    assert not partition.is_hnsw and index.rebuild_pending() == 1
    assert partition.is_hnsw and len(index) == 100
    assert all(best_key(index, v[i]) == f"k{i}" for i in range(100))

    index.remove([f"k{i}" for i in range(0, 100, 3)])  # 34 tombstones: a rebuild
    assert index.rebuild_pending() == 1
    assert len(index) == 66 and partition.is_hnsw and partition._dead == 0
    for i in range(100):
        found = best_key(index, v[i])
        assert found != f"k{i}" if i % 3 == 0 else found == f"k{i}"

    index.remove([f"k{i}" for i in range(100) if i % 3 and i < 50])  # below 60: flat again
    assert index.rebuild_pending() == 1 and not partition.is_hnsw
    assert all(best_key(index, v[i]) == f"k{i}" for i in range(50, 100) if i % 3)


def test_changes_made_while_a_rebuild_runs_are_kept_by_the_swap(small_hnsw: None) -> None:
    """The build reads a snapshot off the lock; what changed meanwhile (new rows, removals,
    new expiries, a key removed and stored again) is replayed when the result is swapped in."""
    index = vector_index.SemanticIndex(DIM, max_entries=1000, background=False)
    v = random_vectors(200)
    for i in range(100):
        index.add("p", f"k{i}", time.time() + 60, v[i])

    def meanwhile() -> None:
        for i in range(100, 150):
            index.add("p", f"k{i}", time.time() + 60, v[i])
        index.remove(["k0", "k1", "k120"])
        index.touch("p", "k2", time.time() + 600)
        index.add("p", "k3", time.time() + 60, v[3])  # stored again: only the expiry moves
        index.remove(["k4"])
        index.add("p", "k4", time.time() + 60, v[150])  # removed, then stored with a new vector

    assert index.rebuild("p", on_building=meanwhile)
    assert len(index) == 147 and index._partitions["p"].is_hnsw
    assert all(best_key(index, v[i]) == f"k{i}" for i in range(5, 150) if i != 120)
    assert best_key(index, v[0]) not in {"k0", "k1"} and best_key(index, v[120]) != "k120"
    assert index.search("p", v[2], k=1)[0].expires_at > time.time() + 500
    assert best_key(index, v[150]) == "k4" and best_key(index, v[4]) != "k4"


def test_a_lookup_during_a_rebuild_does_not_wait_for_it(small_hnsw: None) -> None:
    """The build runs off the lock: a search made while it is parked in the middle of the
    build returns at once (with the rows indexed before the rebuild)."""
    index = vector_index.SemanticIndex(DIM, max_entries=10_000, background=False)
    v = random_vectors(3000)
    for i in range(3000):
        index.add("p", f"k{i}", time.time() + 60, v[i])
    building, may_finish = threading.Event(), threading.Event()

    def park() -> None:
        building.set()
        assert may_finish.wait(30)

    rebuild = threading.Thread(target=index.rebuild, args=("p",), kwargs={"on_building": park})
    rebuild.start()
    try:
        assert building.wait(30)
        searched = threading.Event()
        found: list[str | None] = []

        def search() -> None:
            found.append(best_key(index, v[42]))
            searched.set()

        threading.Thread(target=search).start()
        assert searched.wait(10), "the search waited for the rebuild"
        assert found == ["k42"] and index._partitions["p"].rebuilding
    finally:
        may_finish.set()
        rebuild.join()
    assert index._partitions["p"].is_hnsw and best_key(index, v[42]) == "k42"


def test_a_lookup_scouts_with_a_small_beam_and_searches_fully_only_near_the_floor(
    small_hnsw: None,
) -> None:
    index = vector_index.SemanticIndex(DIM, max_entries=10_000, background=False)
    v = random_vectors(2000)
    for i in range(2000):
        index.add("p", f"k{i}", time.time() + 3600, v[i])
    index.rebuild_pending()
    partition = index._partitions["p"]
    assert partition.is_hnsw
    searches: list[object] = []
    faiss_index = partition._base

    class Counting:
        ntotal = faiss_index.ntotal  # type: ignore[union-attr]

        def search(self, *args: object, **kwargs: object) -> object:
            searches.append(kwargs.get("params"))
            return faiss_index.search(*args, **kwargs)  # type: ignore[union-attr]

    partition._base = Counting()  # type: ignore[assignment]
    floor = 0.9
    near = random_vectors(40, seed=1) * 0.3 + v[:40]  # cosine ~0.96 with its stored vector
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    for i, q in enumerate(near):
        searches.clear()
        found = index.search("p", q, 4, floor)
        assert found == index.search("p", q, 4)
        assert found[0].key == f"k{i}" and len(searches) == 3  # scout, full, and ours
    for q in random_vectors(40, seed=2):  # nothing near: the scout's answer stands
        searches.clear()
        found = index.search("p", q, 4, floor)
        assert found[0].cosine < floor - vector_index.SCOUT_MARGIN
        assert len(searches) == 1 and searches[0] is not None


def test_storing_the_same_conversation_again_only_moves_its_expiry(small_hnsw: None) -> None:
    """Every answer this process stores comes back to it from L3 (the sync thread): that
    must not replace its vector, or an HNSW index fills with tombstones and rebuilds."""
    index = vector_index.SemanticIndex(DIM, max_entries=100, background=False)
    v = random_vectors(80)
    for i in range(80):
        index.add("p", f"k{i}", time.time() + 60, v[i])
    partition = index._partitions["p"]
    index.rebuild_pending()
    assert partition.is_hnsw
    for i in range(80):
        index.add("p", f"k{i}", time.time() + 600, v[i])
    assert len(index) == 80 and partition._dead == 0 and not partition.needs_rebuild()
    assert index.search("p", v[5], k=1)[0].expires_at > time.time() + 500
    for i in range(80, 100):  # the bound still counts each conversation once
        index.add("p", f"k{i}", time.time() + 60, random_vectors(100)[i])
    assert len(index) == 100


def test_expired_vectors_are_never_returned_and_are_dropped() -> None:
    index = vector_index.SemanticIndex(DIM, max_entries=100, background=False)
    v = random_vectors(2)
    index.add("p", "old", time.time() - 1, v[0])
    index.add("p", "new", time.time() + 60, v[1])
    assert [c.key for c in index.search("p", v[0], k=4)] == ["new"]
    assert index.drop_expired() == 1 and len(index) == 1


def test_the_bound_counts_live_vectors_only_and_evicts_the_stalest() -> None:
    """Slots of replaced, expired or purged vectors stayed in the eviction order: they
    counted against the bound, and a stale slot of a key stored again evicted its fresh
    vector."""
    index = vector_index.SemanticIndex(DIM, max_entries=3, background=False)
    v = random_vectors(6)
    index.add("p", "k0", time.time() + 60, v[0])
    index.add("p", "k1", time.time() + 60, v[1])
    index.remove(["k0"])  # its first life ended (purged)
    index.add("p", "k0", time.time() + 60, v[2])
    index.add("p", "k2", time.time() + 60, v[3])
    assert len(index) == 3
    assert [index.search("p", v[i], k=1)[0].key for i in (2, 1, 3)] == ["k0", "k1", "k2"]

    index.add("p", "k1", time.time() + 600, v[1])  # stored again: now the freshest
    index.add("p", "k3", time.time() + 60, v[4])
    assert {c.key for i in (1, 2, 3, 4) for c in index.search("p", v[i], k=1)} == {
        "k1", "k2", "k3"}  # fmt: skip


def test_a_purge_drops_the_vectors_it_covers_at_once() -> None:
    index = vector_index.SemanticIndex(DIM, max_entries=3, background=False)
    v = random_vectors(5)
    index.add("p", "k0", time.time() + 60, v[0], owner=("ns", "purged-model"))
    index.add("p", "k1", time.time() + 60, v[1], owner=("ns", "purged-model"))
    index.add("q", "k2", time.time() + 60, v[2], owner=("ns", "kept-model"))

    index.purge(model="purged-model")

    assert len(index) == 1 and index.search("p", v[0], k=4) == []
    index.add("q", "k3", time.time() + 60, v[3], owner=("ns", "kept-model"))
    index.add("q", "k4", time.time() + 60, v[4], owner=("ns", "kept-model"))
    assert len(index) == 3, "purged vectors do not count against the bound"
    index.purge(key="k3")
    assert len(index) == 2 and "k3" not in {c.key for c in index.search("q", v[3], k=4)}


def test_the_whole_index_is_bounded_oldest_out_first() -> None:
    index = vector_index.SemanticIndex(DIM, max_entries=10, background=False)
    v = random_vectors(15)
    for i in range(15):
        index.add(f"partition-{i % 3}", f"k{i}", time.time() + 60, v[i])
    assert len(index) == 10
    kept = {c.key for i in range(15) for c in index.search(f"partition-{i % 3}", v[i], k=1)}
    assert kept == {f"k{i}" for i in range(5, 15)}


@pytest.mark.embedded
def test_following_l3_indexes_other_processes_rows_and_refreshes_known_ones(
    transactional_db: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cache.semantic import index_sync
    from cache.tiers import DatabaseTier, Entry, L3Row

    index = vector_index.SemanticIndex(DIM, max_entries=100, background=False)
    monkeypatch.setattr(vector_index, "index", lambda: index)
    v = random_vectors(2)
    later = time.time() + 3600
    mine, theirs = "a" * 64, "b" * 64  # exact keys are hex digests

    def row(key: str, text: str, vector: np.ndarray) -> L3Row:
        entry = Entry(key=key, namespace="n", model="m", partition="p", prompt_text=text,
                      semantic_eligible=True, request={}, response={"choices": []},
                      tokens_in=1, tokens_out=1, endpoint="e", created_at=0,
                      expires_at=later, size_bytes=10)  # fmt: skip
        return DatabaseTier.row(entry, vector_index.to_bytes(vector))

    index.add("p", mine, time.time() + 60, v[0])  # stored by this process
    # A row put there by hand, with a key that is no digest, must not stop the sync.
    DatabaseTier(ttl_s=3600).put_rows([row("by-hand", "odd", v[0])])
    DatabaseTier(ttl_s=3600).put_rows([row(mine, "my text", v[0]), row(theirs, "their text", v[1])])

    known = index_sync.KnownKeys()
    known.loaded = True
    monkeypatch.setattr(index_sync, "known_keys", known)
    assert index_sync.load_changed(None) is not None
    assert known.might_contain(theirs) and not known.might_contain("c" * 64)
    assert len(index) == 3  # theirs, and the odd row's vector too
    assert index.search("p", v[1], k=1)[0].key == theirs
    assert index.search("p", v[0], k=1)[0].expires_at == pytest.approx(later, abs=1)


@pytest.mark.embedded
def test_following_l3_sees_rows_stored_again_and_rows_committed_late(
    transactional_db: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upsert keeps the row's id, and ids of concurrent writers commit out of order:
    following ids only missed both. The sync follows `updated_at`, with an overlap."""
    from datetime import timedelta

    from cache.models import CacheEntry
    from cache.semantic import index_sync
    from cache.tiers import DatabaseTier, Entry

    index = vector_index.SemanticIndex(DIM, max_entries=100, background=False)
    monkeypatch.setattr(vector_index, "index", lambda: index)
    v = random_vectors(2)

    def put(key: str, text: str, vector: np.ndarray, expires_at: float) -> None:
        entry = Entry(key=key, namespace="n", model="m", partition="p", prompt_text=text,
                      semantic_eligible=True, request={}, response={"choices": []},
                      tokens_in=1, tokens_out=1, endpoint="e", created_at=time.time(),
                      expires_at=expires_at, size_bytes=10)  # fmt: skip
        DatabaseTier(ttl_s=3600).put_rows([DatabaseTier.row(entry, vector_index.to_bytes(vector))])

    soon, later = time.time() + 60, time.time() + 3600
    put("a" * 64, "first", v[0], soon)
    cursor = index_sync.load_changed(None)
    assert index.search("p", v[0], k=1)[0].expires_at == pytest.approx(soon, abs=1)

    put("a" * 64, "first", v[0], later)  # stored again by another process: same id
    cursor = index_sync.load_changed(index_sync._rewound(cursor))
    assert index.search("p", v[0], k=1)[0].expires_at == pytest.approx(later, abs=1)
    index.remove(["a" * 64])  # as when its first life ended
    put("a" * 64, "first", v[0], later + 60)
    cursor = index_sync.load_changed(index_sync._rewound(cursor))
    assert index.search("p", v[0], k=1)[0].key == "a" * 64

    put("b" * 64, "second", v[1], later)
    late = CacheEntry.objects.get(key="b" * 64)  # committed after the next row, stamped before
    late.updated_at = cursor[0] - timedelta(seconds=1)
    late.save(update_fields=["updated_at"])
    index_sync.load_changed(index_sync._rewound(cursor))
    assert index.search("p", v[1], k=1)[0].key == "b" * 64


def test_the_known_l3_keys_take_fixed_memory_and_never_hide_a_stored_key() -> None:
    from cache.semantic import index_sync

    known = index_sync.KnownKeys()
    known.loaded = True
    stored = [hashlib.sha256(str(n).encode()).hexdigest() for n in range(20_000)]
    for key in stored:
        known.add(key)
    assert all(known.might_contain(key) for key in stored)
    others = [hashlib.sha256(f"other {n}".encode()).hexdigest() for n in range(20_000)]
    assert sum(known.might_contain(key) for key in others) < 100  # ~0.03% expected
    assert sys.getsizeof(known._bitmap) < 9 * 2**20  # 8 MiB, however many keys


@pytest.mark.embedded
def test_a_process_started_after_answers_were_stored_finds_them_by_similarity(
    transactional_db: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restart loads L3 in bulk (on Postgres: one binary server-side cursor): the answers
    other processes stored before it started are matched by similarity, expired ones are
    not indexed, and answers stored without a vector are known for exact lookups only."""
    import asyncio

    from cache import keys, service
    from cache.semantic import index_sync
    from cache.semantic.embedder import get_embedder
    from cache.tiers import DatabaseTier

    index = vector_index.SemanticIndex(DIM, max_entries=1000, background=False)
    monkeypatch.setattr(vector_index, "index", lambda: index)
    known = index_sync.KnownKeys()
    monkeypatch.setattr(index_sync, "known_keys", known)

    def plan(text: str) -> service.CachePlan:
        body = {"model": "m", "messages": [{"role": "user", "content": text}]}
        return service.CachePlan(
            key=keys.derive("ns", "m", body), request=body, request_id="r", read=True,
            store=True, ttl_s=600, max_age_s=None, semantic_mode="on", threshold=0.95,
        )  # fmt: skip

    def stored(text: str, vector: np.ndarray | None, *, ttl_s: float = 600) -> str:
        answer = {"choices": [{"message": {"role": "assistant", "content": text}}]}
        entry = service.entry_for(plan(text), answer, "e", time.time())
        entry.expires_at = time.time() + ttl_s
        embedding = vector_index.to_bytes(vector) if vector is not None else None
        DatabaseTier(ttl_s=3600).put_rows([DatabaseTier.row(entry, embedding)])
        return entry.key

    question = "What is the capital city of France?"
    capital = stored(question, get_embedder().embed([f"user: {question}"])[0])
    for i, vector in enumerate(random_vectors(200)):
        stored(f"filler {i}", vector)
    gone = stored("What is the capital of Italy?", random_vectors(1, seed=3)[0], ttl_s=-1)
    exact_only = stored("Quelle est la capitale de la France ?", None)

    assert index_sync.load_changed(None) is not None
    known.loaded = True

    assert len(index) == 201 and not index.is_rebuilding()
    assert known.might_contain(capital) and known.might_contain(exact_only)
    assert gone not in {
        c.key for c in index.search(plan("x").key.partition, random_vectors(1)[0], 4)
    }
    hit = asyncio.run(service.lookup(plan("What's the capital of France?")))
    assert hit is not None and (hit.kind, hit.entry.key) == ("semantic", capital)
