"""Switching a model's semantic matching on makes the answers it stored while off
matchable: they are embedded as the writer would have embedded them."""

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client as BrowserClient
from django.utils import timezone

from cache.models import CacheEntry
from cache.semantic import backfill, switch, vector_index
from cache.semantic.embedder import get_embedder
from routing import importer
from routing.models import Route
from tests.cache.test_exact_cache import ask, stored
from tests.cache.test_semantic_cache import PARAPHRASE, QUESTION, paraphrase_is
from tests.personas import Client, ModelFactory, make_endpoint, make_model
from tests.processes import Process, wait_until

pytestmark = pytest.mark.embedded

LONG = "Quarterly report. Revenue grew in every region. " * 40 + "\nIs the tone formal?"
PORTUGUESE = "Como faço para abrir uma conta no banco?"


def embedding_of(model: str, text: str) -> bytes | None:
    row = CacheEntry.objects.get(model=model, prompt_text=f"user: {text}")
    return bytes(row.embedding) if row.embedding is not None else None


def switch_on_in_admin(browser: BrowserClient, route: Route) -> None:
    link = route.chain.get()
    form = {
        "model_name": route.model_name, "description": "", "enabled": "on",
        "cache_enabled": "on", "semantic_mode": "on", "semantic_threshold": "0.95",
        "cache_ttl_s": "", "chain-TOTAL_FORMS": "1", "chain-INITIAL_FORMS": "1",
        "chain-MIN_NUM_FORMS": "0", "chain-MAX_NUM_FORMS": "1000",
        "chain-0-id": str(link.id), "chain-0-route": str(route.id),
        "chain-0-position": "0", "chain-0-endpoint": str(link.endpoint_id),
    }  # fmt: skip
    response = browser.post(f"/admin/routing/route/{route.id}/change/", form)
    assert response.status_code == 302, response.content.decode()[:2000]


def test_answers_stored_while_off_get_semantic_hits_once_switched_on_in_admin(
    gateway: Process,
    alice: Client,
    model_with: ModelFactory,
    admin_browser: BrowserClient,
    settings: Any,
) -> None:
    model = model_with("", semantic="off")
    for text in (QUESTION, LONG, PORTUGUESE):
        assert ask(gateway, alice, model, text).headers["x-beastmode-cache"] == "miss"
    wait_until(lambda: stored(model) == 3)
    assert paraphrase_is(gateway, alice, model, "miss")
    settings.CELERY_TASK_ALWAYS_EAGER = True  # run the backfill here, in a thread

    switch_on_in_admin(admin_browser, Route.objects.get(model_name=model))

    wait_until(lambda: embedding_of(model, QUESTION), timeout_s=30)
    wait_until(lambda: paraphrase_is(gateway, alice, model, "semantic"))
    assert embedding_of(model, LONG) is None, "longer than the embedder reads"
    assert embedding_of(model, PORTUGUESE) is None, "only English is compared"


def test_import_models_switching_semantic_matching_on_embeds_the_stored_answers(
    transactional_db: None, tmp_path: Path, fake_upstream: Process, settings: Any
) -> None:
    route = make_model("imported", [make_endpoint("imported-ep", f"{fake_upstream.url}/v1")])
    make_row("imported", "a", QUESTION)
    settings.CELERY_TASK_ALWAYS_EAGER = True
    path = tmp_path / "models.yaml"
    path.write_text(
        "models:\n  - name: imported\n    cache: {semantic: shadow}\n    endpoints:\n"
        f"      - {{name: imported-ep, base_url: '{fake_upstream.url}/v1',"
        " model: imported-ep-model, timeout_s: 5, max_retries: 0,"
        " input_cost_per_1m: 1, output_cost_per_1m: 2, connect_timeout_s: 1,"
        " first_byte_timeout_s: 2}\n"
    )

    call_command("import_models", str(path))

    route.refresh_from_db()
    assert route.semantic_mode == "shadow"
    wait_until(lambda: embedding_of("imported", QUESTION), timeout_s=30)


@pytest.mark.parametrize(
    ("was", "now", "started"),
    [("off", "on", True), ("off", "shadow", True), ("on", "on", False),
     ("shadow", "on", False), ("on", "off", False), ("off", "off", False)],
)  # fmt: skip
def test_only_a_switch_from_off_starts_the_backfill_after_commit(
    db: None, django_capture_on_commit_callbacks: Any, was: str, now: str, started: bool
) -> None:
    with django_capture_on_commit_callbacks() as callbacks:
        assert switch.mode_changed("m", was=was, now=now) is started
    assert len(callbacks) == int(started)


def test_the_backfill_embeds_in_batches_what_the_lookup_compares_and_nothing_else(
    transactional_db: None,
) -> None:
    english = [make_row("m", f"q{i}", f"How do I reset password number {i}?") for i in range(5)]
    too_long = make_row("m", "long", LONG)
    portuguese = make_row("m", "pt", PORTUGUESE)
    with_tools = make_row("m", "tools", QUESTION, semantic_eligible=False)
    expired = make_row("m", "expired", QUESTION, expires_in=timedelta(seconds=-1))
    other_model = make_row("other", "other", QUESTION)
    vector = get_embedder().embed_whole([f"user: {PARAPHRASE}"])[0]
    assert vector is not None
    done = make_row("m", "done", PARAPHRASE, embedding=vector_index.to_bytes(vector))
    before = timezone.now()

    result = backfill.embed_unembedded("m", batch_size=2)

    assert (result.embedded, result.left_unembedded) == (5, 2)
    for row in english:
        row.refresh_from_db()
        assert row.embedding is not None and row.updated_at >= before
        same_as_writer = get_embedder().embed_whole([row.prompt_text])[0]
        assert same_as_writer is not None
        assert bytes(row.embedding) == vector_index.to_bytes(same_as_writer)
    for row in (too_long, portuguese, with_tools, expired, other_model):
        row.refresh_from_db()
        assert row.embedding is None and row.updated_at < before
    done.refresh_from_db()
    assert done.updated_at < before, "rows with a vector are left alone"


def make_row(
    model: str,
    key: str,
    text: str,
    *,
    semantic_eligible: bool = True,
    expires_in: timedelta = timedelta(hours=1),
    embedding: bytes | None = None,
) -> CacheEntry:
    now = timezone.now()
    return CacheEntry.objects.create(
        key=key.ljust(64, "0"), namespace="key:1", model=model, partition="p",
        prompt_text=f"user: {text}", semantic_eligible=semantic_eligible, response={},
        embedding=embedding, created_at=now, expires_at=now + expires_in,
        updated_at=now - timedelta(minutes=1),
    )  # fmt: skip


def test_a_new_model_imported_with_semantic_matching_on_starts_no_backfill(
    db: None, django_capture_on_commit_callbacks: Any
) -> None:
    text = (
        "models:\n  - name: brand-new\n    cache: {semantic: 'on'}\n    endpoints:\n"
        "      - {name: brand-new-ep, base_url: 'http://127.0.0.1:9/v1', model: m}\n"
    )
    with django_capture_on_commit_callbacks() as callbacks:
        importer.import_models(text)
    assert Route.objects.get(model_name="brand-new").semantic_mode == "on"
    assert callbacks == [], "a new model has no answers to embed"
