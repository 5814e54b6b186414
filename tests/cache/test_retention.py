"""The cache's logs are bounded: old semantic pairs and purge records are pruned, and
what still matters (marked pairs, purges that can cover a live entry) is kept."""

from datetime import datetime, timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from beastmode.celery import app
from cache import controls, purge, purge_log, tasks
from cache.models import CachePurge, SemanticPair
from cache.semantic import false_pairs
from tests.cache.test_exact_cache import ask
from tests.personas import Client, ModelFactory
from tests.processes import Process, wait_until

pytestmark = pytest.mark.embedded

DAY = timedelta(days=1)


def make_pair(asked: str, *, age: timedelta, marked_false: bool = False) -> SemanticPair:
    pair = SemanticPair.objects.create(
        request_id=f"req-{asked}", model="m", namespace="key:1", partition="p",
        asked_text=asked, cached_key="k" * 64, cached_text="user: the cached question",
        similarity=0.97, served=True, marked_false=marked_false,
    )  # fmt: skip
    SemanticPair.objects.filter(pk=pair.pk).update(created_at=timezone.now() - age)
    return pair


def make_purge(*, age: timedelta, **scope: str) -> CachePurge:
    record = CachePurge.objects.create(**scope)
    CachePurge.objects.filter(pk=record.pk).update(created_at=timezone.now() - age)
    record.refresh_from_db()
    return record


def test_old_semantic_pairs_go_and_marked_or_recent_ones_stay(transactional_db: None) -> None:
    retention = timedelta(days=settings.CACHE_SEMANTIC_PAIR_RETENTION_DAYS)
    make_pair("user: old", age=retention + DAY)
    make_pair("user: old but marked false", age=retention + 400 * DAY, marked_false=True)
    make_pair("user: recent", age=retention - DAY)

    assert tasks.prune_logs.apply().get()["semantic_pairs"] == 1

    left = set(SemanticPair.objects.values_list("asked_text", flat=True))
    assert left == {"user: old but marked false", "user: recent"}
    false_pairs.reload()  # the marked pair still blocks that match
    assert false_pairs.is_marked("p", "user: old but marked false", "user: the cached question")


def test_a_purge_record_stays_while_an_entry_it_covers_can_still_be_alive(
    transactional_db: None,
) -> None:
    """An answer stored with `cache.ttl` of a year just before a purge is covered by it for
    a year: L3's default lifetime (a day), which the log used to forget purges after, is not
    the longest an entry lives."""
    a_year = timedelta(seconds=controls.MAX_TTL_S)
    two_days_old = make_purge(age=2 * DAY, model="year-long")
    make_purge(age=a_year, namespace="key:1")  # within the clocks' margin: kept
    make_purge(age=a_year + timedelta(seconds=purge_log.CLOCK_MARGIN_S) + DAY, model="m")

    assert tasks.prune_logs.apply().get()["purges"] == 1

    assert CachePurge.objects.count() == 2
    log = purge_log.PurgeLog(retention_s=purge_log.log.retention_s)  # a process's, started now
    log.refresh()
    assert log.covers(
        model="year-long", namespace="key:1", key="k" * 64, created_at=_before(two_days_old)
    )


def test_the_purge_log_keeps_working_after_old_records_are_pruned(
    transactional_db: None,
) -> None:
    log = purge_log.PurgeLog(retention_s=purge_log.retention_s())
    make_purge(age=timedelta(0), key="a" * 64)
    old = make_purge(age=timedelta(seconds=purge_log.retention_s()) + DAY, model="m")
    assert len(log.refresh()) == 1  # the old record is past what any process reads

    tasks.prune_logs.apply().get()
    newer = CachePurge.objects.create(model="m")

    assert [p.model for p in log.refresh()] == ["m"]
    assert newer.id > old.id, "the pruned record's id is not reused"
    assert log.covers(model="m", namespace="key:1", key="b" * 64, created_at=_before(newer))
    fresh = purge_log.PurgeLog(retention_s=purge_log.retention_s())
    assert len(fresh.refresh()) == 2


def test_a_running_gateway_applies_purges_made_after_pruning(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("")
    ask(gateway, alice, model, "first")
    purge.purge(model=model)  # read by the gateway, then pruned
    CachePurge.objects.update(created_at=timezone.now() - 2 * timedelta(seconds=controls.MAX_TTL_S))
    assert tasks.prune_logs.apply().get()["purges"] >= 1
    ask(gateway, alice, model, "second")
    assert ask(gateway, alice, model, "second").headers["x-beastmode-cache"] == "exact"

    purge.purge(model=model)

    wait_until(lambda: ask(gateway, alice, model, "second", cache={"no-store": True})
               .headers["x-beastmode-cache"] == "miss")  # fmt: skip


def test_the_logs_are_pruned_on_the_periodic_schedule() -> None:
    assert "cache.tasks.prune_logs" in {e["task"] for e in app.conf.beat_schedule.values()}


def _before(record: CachePurge) -> float:
    created_at: datetime = record.created_at
    return created_at.timestamp() - 1
