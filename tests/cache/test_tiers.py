"""L1 bounds and expiry, L3 batch upserts; stream assembly and replay round trip."""

import gc
import json
import threading
import time

import numpy as np
import pytest
from django.db import connection

from cache import keys, service
from cache import writer as cache_writer
from cache.models import CacheEntry
from cache.semantic import quantised, vector_index
from cache.streams import StreamAssembler, replay
from cache.tiers import DatabaseTier, Entry, MemoryTier
from tests.processes import wait_until


def entry(key: str, size: int = 100, expires_at: float = 1e12) -> Entry:
    return Entry(key=key, namespace="n", model="m", partition="p", prompt_text="x",
                 semantic_eligible=True, request={}, response={"choices": []}, tokens_in=1,
                 tokens_out=1, endpoint="e", created_at=0, expires_at=expires_at,
                 size_bytes=size)  # fmt: skip


def test_l1_evicts_the_least_recently_used_entry_when_full() -> None:
    l1 = MemoryTier(max_entries=2, max_bytes=10_000, ttl_s=60)
    l1.put(entry("a"), now=0)
    l1.put(entry("b"), now=0)
    assert l1.get("a", now=1)  # a is now more recent than b
    l1.put(entry("c"), now=1)
    assert l1.get("b", now=1) is None and l1.get("a", now=1) and l1.get("c", now=1)


def test_l1_is_bounded_by_the_bytes_it_holds_request_included() -> None:
    """A long system prompt with a short answer: the bound counts what L1 keeps in memory."""
    l1 = MemoryTier(max_entries=100, max_bytes=3_000, ttl_s=60)
    for name in "abc":
        big = entry(name)
        big.request = {"messages": [{"role": "system", "content": "x" * 1_000}]}
        l1.put(big, now=0)
    assert len(l1) == 2 and l1.get("a", now=0) is None
    huge = entry("d")
    huge.request = {"messages": [{"role": "system", "content": "x" * 5_000}]}
    l1.put(huge, now=0)
    assert l1.get("d", now=0) is None and len(l1) == 2  # larger than L1: not held


def test_l1_entries_expire_at_the_earlier_of_its_ttl_and_the_entrys_own() -> None:
    l1 = MemoryTier(max_entries=10, max_bytes=10_000, ttl_s=60)
    l1.put(entry("short", expires_at=5), now=0)
    l1.put(entry("long"), now=0)
    assert l1.get("short", now=4) and l1.get("short", now=6) is None
    assert l1.get("long", now=59) and l1.get("long", now=61) is None


def test_a_streamed_answer_assembles_and_replays_as_the_same_answer() -> None:
    chunks = [
        {
            "id": "c1",
            "model": "m",
            "created": 1,
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}],
        },
        {"id": "c1", "choices": [{"index": 0, "delta": {"content": "Hello"}}]},
        {
            "id": "c1",
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "t",
                                "type": "function",
                                "function": {"name": "get", "arguments": '{"a":'},
                            }
                        ]
                    },
                }
            ],
        },
        {
            "id": "c1",
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]},
                }
            ],
        },
        {"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {"id": "c1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
    ]
    assembler = StreamAssembler()
    for chunk in chunks:
        assembler.add(chunk)
    completion = assembler.completion()

    message = completion["choices"][0]["message"]
    assert message["content"] == "Hello"
    assert message["tool_calls"][0]["function"] == {"name": "get", "arguments": '{"a":1}'}
    assert completion["choices"][0]["finish_reason"] == "tool_calls"
    assert completion["usage"]["completion_tokens"] == 2

    events = replay(completion, include_usage=True)
    assert events[-1] == b"data: [DONE]\n\n"
    replayed = StreamAssembler()
    for event in events[:-1]:
        replayed.add(json.loads(event.removeprefix(b"data: ")))
    assert replayed.completion()["choices"] == completion["choices"]
    assert json.loads(events[-2].removeprefix(b"data: "))["choices"] == []
    assert b'"usage"' not in b"".join(replay(completion, include_usage=False))


def test_an_l2_entry_of_another_shape_is_a_miss_not_an_error(settings: object) -> None:
    import pytest
    from django.core.cache import caches

    from cache.tiers import RedisTier

    if not settings.REDIS_URL:  # type: ignore[attr-defined]
        pytest.skip("needs Redis")
    l2 = RedisTier(ttl_s=60)
    caches["default"].set(RedisTier._PREFIX + "odd", {"key": "odd", "from": "an older version"})
    assert l2.get("odd") is None


@pytest.mark.embedded
def test_l3_upserts_big_batches_and_keeps_the_last_answer_per_key(transactional_db: None) -> None:
    l3 = DatabaseTier(ttl_s=3600)
    later = 2e9  # 2033
    first = [(entry(f"k{i}", expires_at=later), None) for i in range(1200)]  # several statements
    l3.put_rows([DatabaseTier.row(e, embedding) for e, embedding in first])
    again = [(entry(f"k{i}", expires_at=later), None) for i in range(0, 1200, 7)]
    for e, _ in again:
        e.response = {"choices": [], "again": True}
    rows = [*again, (entry("k0", expires_at=later), b"\0" * 4)]  # k0 twice: last wins
    l3.put_rows([DatabaseTier.row(e, embedding) for e, embedding in rows])
    # (namespace "n": the rows of this test, not a late write of an earlier test's gateway)
    assert CacheEntry.objects.filter(namespace="n").count() == 1200
    rows = {row.key: row for row in CacheEntry.objects.filter(namespace="n")}
    assert all(rows[f"k{i}"].response.get("again") for i in range(7, 1200, 7))
    assert rows["k0"].response == {"choices": []} and bytes(rows["k0"].embedding) == b"\0" * 4
    assert l3.get("k7", now=0) is not None and l3.get("k7", now=0).response["again"] is True


@pytest.mark.embedded
def test_a_row_the_database_refuses_costs_only_its_own_entry(transactional_db: None) -> None:
    """NUL characters (Postgres cannot store them) are kept as U+FFFD; a value out of the
    column's range (an upstream reporting 10^12 tokens) fails alone, not its batch."""
    later = 2e9  # 2033
    odd, absurd = entry("nul", expires_at=later), entry("absurd", expires_at=later)
    odd.prompt_text, odd.response = "a\u0000b", {"choices": [{"text": "c\u0000d"}]}
    absurd.tokens_in = 10**12 if connection.vendor == "postgresql" else 2**70
    batch = [entry("before", expires_at=later), odd, absurd, entry("after", expires_at=later)]
    cache_writer._put_rows([DatabaseTier.row(e, None) for e in batch])
    rows = {row.key: row for row in CacheEntry.objects.all()}
    assert set(rows) == {"before", "nul", "after"}
    if connection.vendor == "postgresql":
        assert rows["nul"].prompt_text == "a\ufffdb"
        assert rows["nul"].response == {"choices": [{"text": "c\ufffdd"}]}


def test_cached_answers_add_nothing_for_the_garbage_collector_to_walk() -> None:
    """Full collections pause every request in flight for as long as they walk the tracked
    objects; cached entries must not be among them, in L1, the semantic index or on their
    way to L3 (a NamedTuple, an object per entry or a queued Entry was: 20k tracked L1
    entries, 2 objects per indexed conversation, ~10 per answer waiting for L3)."""
    l1 = MemoryTier(max_entries=5_000, max_bytes=10**9, ttl_s=60)
    index = vector_index.PartitionIndex(384)
    vector = np.ones(384, dtype=np.float32) / np.sqrt(384)
    gc.collect()
    before = len(gc.get_objects())
    for_l3 = []
    for i in range(5_000):
        answer = entry(f"k{i}", expires_at=2e9)
        answer.response = {"choices": [{"message": {"role": "assistant", "content": "hi"}}]}
        l1.put(answer, now=0)
        index.add(f"k{i}", 1e12, quantised.codes(vector), stamp=i)
        for_l3.append(DatabaseTier.row(answer, b"\0" * 8))
    del answer
    gc.collect()
    assert len(l1) == len(index) == len(for_l3) == 5_000
    assert len(gc.get_objects()) - before < 50


def plan(text: str) -> service.CachePlan:
    body = {"model": "m", "messages": [{"role": "user", "content": text}]}
    return service.CachePlan(
        key=keys.derive("ns", "m", body), request=body, request_id="r", read=True, store=True,
        ttl_s=60, max_age_s=None, semantic_mode="off", threshold=0.95,
    )  # fmt: skip


@pytest.mark.embedded
def test_the_cache_writer_keeps_writing_after_a_failed_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real, failed, to_l3 = cache_writer.write_l2_and_index, [], []

    def fail_once(batch: list, now: float) -> list:
        if not failed:
            failed.append(batch)
            raise RuntimeError("embedder down")
        return real(batch, now)

    monkeypatch.setattr(cache_writer, "write_l2_and_index", fail_once)
    monkeypatch.setattr(cache_writer, "db", lambda write: to_l3.extend(write.args[0]))
    writer = cache_writer._LowerTierWriter()
    first, second = plan("first"), plan("second")
    later = time.time() + 60
    writer.put(entry(first.key.exact, expires_at=later), first)
    wait_until(lambda: failed)
    writer.put(entry(second.key.exact, expires_at=later), second)
    assert wait_until(lambda: [row[0] for row in to_l3]) == [second.key.exact]


def test_the_cache_writer_drops_answers_beyond_its_bound() -> None:
    writer = cache_writer._LowerTierWriter()
    writer.MAX_QUEUED = 3
    writer._thread = threading.current_thread()  # as if its thread were stuck on a slow write
    for i in range(10):
        writer.put(entry(f"k{i}"), plan(f"question {i}"))
    assert writer._queue.qsize() == 3


def test_a_stuck_cache_writer_does_not_hold_up_shutdown() -> None:
    writer = cache_writer._LowerTierWriter()
    writer._thread = threading.current_thread()  # no thread of its own in this test
    writer.put(entry("k"), plan("question"))
    stuck = threading.Thread(target=writer._write_lock.acquire)  # never released
    stuck.start()
    stuck.join()
    started = time.monotonic()
    writer.flush(timeout_s=0.2)
    assert time.monotonic() - started < 2 and writer._queue.qsize() == 1
