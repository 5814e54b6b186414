"""Pointing a model to another upstream purges its cached answers; other changes keep them.

Through the live gateway: answers cached from upstream A are not served once admin (or
import_models) points the model to upstream B, neither as exact nor as semantic hits.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import transaction
from django.forms.models import model_to_dict
from django.test import Client as BrowserClient

from cache.models import CachePurge
from routing import repointing
from routing.models import ModelEndpoint, Route, RouteEndpoint
from routing.upstreams import Upstream
from tests.cache.test_exact_cache import ask, stored
from tests.personas import Client, ModelFactory, make_endpoint, make_model, wait_for_model
from tests.processes import Process, Reply, wait_until

pytestmark = pytest.mark.embedded

QUESTION = "What is the capital city of France?"
PARAPHRASE = "What's the capital of France?"


def answer(reply: Reply) -> str:
    assert reply.status == 200, reply.body
    return str(reply.json()["choices"][0]["message"]["content"])


def answered_by(upstream_model: str) -> Callable[[Reply], bool]:
    return lambda reply: answer(reply).startswith(f"Echo from {upstream_model}:")


def endpoint_form(endpoint: ModelEndpoint, **changes: Any) -> dict[str, Any]:
    fields = model_to_dict(endpoint, exclude=["id", "api_key_encrypted", "updated_at"])
    return {**fields, "api_key": "", **changes}


def change_endpoint(browser: BrowserClient, endpoint: ModelEndpoint, **changes: Any) -> str:
    response = browser.post(
        f"/admin/routing/modelendpoint/{endpoint.id}/change/",
        endpoint_form(endpoint, **changes),
        follow=True,
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "was changed successfully" in page, page
    return page


def change_chain(browser: BrowserClient, route: Route, endpoints: list[ModelEndpoint]) -> str:
    """Save the route in admin with this chain: current links kept or deleted, others added."""
    links = list(route.chain.order_by("position"))
    wanted = {endpoint.id: position for position, endpoint in enumerate(endpoints)}
    form: dict[str, Any] = {
        "model_name": route.model_name, "description": route.description,
        "enabled": "on", "cache_enabled": "on", "semantic_mode": route.semantic_mode,
        "semantic_threshold": str(route.semantic_threshold), "cache_ttl_s": "",
        "chain-INITIAL_FORMS": str(len(links)), "chain-MIN_NUM_FORMS": "0",
        "chain-MAX_NUM_FORMS": "1000",
    }  # fmt: skip
    kept = {link.endpoint_id for link in links}
    rows = [(link.id, link.endpoint_id) for link in links]
    rows += [(None, endpoint.id) for endpoint in endpoints if endpoint.id not in kept]
    for index, (link_id, endpoint_id) in enumerate(rows):
        prefix = f"chain-{index}"
        form[f"{prefix}-id"] = link_id or ""
        form[f"{prefix}-route"] = route.id
        form[f"{prefix}-endpoint"] = endpoint_id
        form[f"{prefix}-position"] = wanted.get(endpoint_id, 0)
        if endpoint_id not in wanted:
            form[f"{prefix}-DELETE"] = "on"
    form["chain-TOTAL_FORMS"] = str(len(rows))
    response = browser.post(f"/admin/routing/route/{route.id}/change/", form, follow=True)
    assert response.status_code == 200
    page = response.content.decode()
    assert "was changed successfully" in page, page
    return page


# --- through the gateway -----------------------------------------------------------


def test_an_answer_cached_from_upstream_a_is_not_served_once_the_endpoint_points_to_b(
    gateway: Process, alice: Client, model_with: ModelFactory, admin_browser: BrowserClient
) -> None:
    model = model_with("")
    endpoint = ModelEndpoint.objects.get(name=f"{model}-ep0")
    first = ask(gateway, alice, model, QUESTION)
    assert answered_by(f"{model}-ep0-model")(first)
    assert ask(gateway, alice, model, QUESTION).headers["x-beastmode-cache"] == "exact"

    page = change_endpoint(admin_browser, endpoint, upstream_model="model-b")

    assert f"Purged the cached answers of model &#x27;{model}&#x27; from every tier" in page
    assert "it no longer calls" in page and f"{model}-ep0-model at" in page
    wait_until(lambda: answered_by("model-b")(ask(gateway, alice, model, QUESTION)))
    for _ in range(5):  # and never again A's: not from L1, L2 or L3
        assert answered_by("model-b")(ask(gateway, alice, model, QUESTION))


def test_a_paraphrase_is_not_served_upstream_a_s_answer_once_the_chain_points_to_b(
    gateway: Process,
    fake_upstream: Process,
    alice: Client,
    model_with: ModelFactory,
    admin_browser: BrowserClient,
) -> None:
    model = model_with("", semantic="on")
    route = Route.objects.get(model_name=model)
    ask(gateway, alice, model, QUESTION)
    wait_until(lambda: stored(model) == 1)
    assert ask(gateway, alice, model, PARAPHRASE).headers["x-beastmode-cache"] == "semantic"
    upstream_b = make_endpoint(f"{model}-b", f"{fake_upstream.url}/delay/0/v1",
                               upstream_model="model-b")  # fmt: skip

    page = change_chain(admin_browser, route, [upstream_b])

    assert f"Purged the cached answers of model &#x27;{model}&#x27;" in page
    wait_until(lambda: answered_by("model-b")(ask(gateway, alice, model, PARAPHRASE)))
    assert answered_by("model-b")(ask(gateway, alice, model, QUESTION))


def test_a_price_or_timeout_change_keeps_the_cache(
    gateway: Process, alice: Client, model_with: ModelFactory, admin_browser: BrowserClient
) -> None:
    model = model_with("")
    endpoint = ModelEndpoint.objects.get(name=f"{model}-ep0")
    ask(gateway, alice, model, QUESTION)
    wait_until(lambda: stored(model) == 1)

    page = change_endpoint(
        admin_browser, endpoint, input_cost_per_1m="9.5", total_timeout_s="7", max_retries="1",
        api_key="sk-rotated",
    )  # fmt: skip

    assert "Purged" not in page
    assert not CachePurge.objects.filter(model=model).exists()
    endpoint.refresh_from_db()
    assert endpoint.total_timeout_s == 7 and endpoint.get_api_key() == "sk-rotated"
    reply = ask(gateway, alice, model, QUESTION)
    assert reply.headers["x-beastmode-cache"] == "exact"
    assert stored(model) == 1


def test_adding_a_second_endpoint_for_the_same_upstream_keeps_the_cache(
    gateway: Process,
    fake_upstream: Process,
    alice: Client,
    model_with: ModelFactory,
    admin_browser: BrowserClient,
) -> None:
    model = model_with("")
    route = Route.objects.get(model_name=model)
    primary = ModelEndpoint.objects.get(name=f"{model}-ep0")
    ask(gateway, alice, model, QUESTION)
    wait_until(lambda: stored(model) == 1)
    twin = make_endpoint(f"{model}-twin", f"{fake_upstream.url}/v1/",  # same, trailing slash
                         upstream_model=primary.upstream_model, api_key="sk-other")  # fmt: skip

    page = change_chain(admin_browser, route, [primary, twin])

    assert "Purged" not in page
    assert not CachePurge.objects.filter(model=model).exists()
    assert ask(gateway, alice, model, QUESTION).headers["x-beastmode-cache"] == "exact"


def test_deleting_the_endpoint_that_served_a_model_purges_it(
    alice: Client, model_with: ModelFactory, admin_browser: BrowserClient
) -> None:
    model = model_with("", "")  # two upstreams: ep0's and ep1's (another upstream model)
    endpoint = ModelEndpoint.objects.get(name=f"{model}-ep0")

    response = admin_browser.post(
        f"/admin/routing/modelendpoint/{endpoint.id}/delete/", {"post": "yes"}, follow=True
    )

    page = response.content.decode()
    assert f"Purged the cached answers of model &#x27;{model}&#x27;" in page
    assert CachePurge.objects.filter(model=model).count() == 1


def test_import_models_purges_a_model_it_points_elsewhere_and_only_then(
    gateway: Process,
    fake_upstream: Process,
    alice: Client,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = f"""
models:
  - name: imported
    endpoints:
      - name: imported-a
        base_url: {fake_upstream.url}/v1
        model: model-a
        timeout_s: 5
"""
    path = tmp_path / "models.yaml"
    path.write_text(config)
    call_command("import_models", str(path))
    wait_for_model(gateway, alice, "imported")
    assert answered_by("model-a")(ask(gateway, alice, "imported", QUESTION))
    wait_until(lambda: stored("imported") == 1)

    path.write_text(config.replace("timeout_s: 5", "timeout_s: 9"))
    call_command("import_models", str(path))
    assert not CachePurge.objects.filter(model="imported").exists()
    assert ask(gateway, alice, "imported", QUESTION).headers["x-beastmode-cache"] == "exact"

    path.write_text(config.replace("model: model-a", "model: model-b"))
    call_command("import_models", str(path))

    assert "purged the cached answers of model imported: it no longer calls model-a" in (
        capsys.readouterr().out
    )
    wait_until(lambda: answered_by("model-b")(ask(gateway, alice, "imported", QUESTION)))


# --- what counts as another upstream ---------------------------------------------


@pytest.fixture
def pool(db: None) -> dict[str, ModelEndpoint]:
    """Two upstreams (a, b) and a second endpoint for a's upstream with its own key."""
    return {
        "a": make_endpoint("a", "http://a.example/v1", upstream_model="gpt"),
        "a-twin": make_endpoint(
            "a-twin",
            "HTTP://A.example/v1/",
            upstream_model="gpt",
            api_key="sk-2",
            total_timeout_s=60,
            input_cost_per_1m=7,
        ),
        "b": make_endpoint("b", "http://b.example/v1", upstream_model="gpt"),
    }


def repoints_of(change: Callable[[], object]) -> list[str]:
    with repointing.purging_repointed_models() as repoints:
        change()
    return [repoint.model_name for repoint in repoints]


def relink(route: Route, endpoints: list[ModelEndpoint]) -> None:
    route.chain.all().delete()
    for position, endpoint in enumerate(endpoints):
        RouteEndpoint.objects.create(route=route, endpoint=endpoint, position=position)


def test_what_repoints_a_model(pool: dict[str, ModelEndpoint]) -> None:
    a, twin, b = pool["a"], pool["a-twin"], pool["b"]
    route = make_model("m", [a])

    assert repoints_of(lambda: relink(route, [a, twin])) == [], "same upstream, pooled"
    assert repoints_of(lambda: relink(route, [twin, a])) == [], "its twin first: same upstream"
    assert repoints_of(lambda: relink(route, [a, b])) == [], "a fallback added"
    assert repoints_of(lambda: relink(route, [b, a])) == ["m"], "another primary"
    assert repoints_of(lambda: relink(route, [b])) == ["m"], "a removed"
    assert repoints_of(lambda: ModelEndpoint.objects.filter(pk=b.pk).update(
        base_url="http://b.example/v2")) == ["m"], "another URL"  # fmt: skip
    assert repoints_of(lambda: ModelEndpoint.objects.filter(pk=b.pk).update(
        max_retries=5, first_byte_timeout_s=1)) == [], "retries and timeouts"  # fmt: skip


def test_disabling_renaming_or_deleting_repoints(pool: dict[str, ModelEndpoint]) -> None:
    a, b = pool["a"], pool["b"]
    route = make_model("m", [a, b])
    make_model("other", [b])

    assert repoints_of(lambda: ModelEndpoint.objects.filter(pk=a.pk).update(
        enabled=False)) == ["m"], "b answers now"  # fmt: skip
    assert repoints_of(lambda: Route.objects.filter(pk=route.pk).update(
        model_name="m2")) == ["m"], "the old name calls nothing"  # fmt: skip
    assert repoints_of(lambda: ModelEndpoint.objects.filter(pk=b.pk).delete()) == ["m2", "other"]


def test_the_purge_comes_once_the_change_is_committed_and_not_when_it_is_rolled_back(
    transactional_db: None,
) -> None:
    """(A real transaction: a purge applied in a test's rolled-back one would stay in this
    process's purge log and cover other tests' entries.)"""
    a = make_endpoint("repoint-a", "http://a.example/v1")
    b = make_endpoint("repoint-b", "http://b.example/v1")
    route = make_model("repointed", [a])

    with transaction.atomic():
        assert repoints_of(lambda: relink(route, [b])) == ["repointed"]
        assert not CachePurge.objects.exists(), "not before the commit"
    assert list(CachePurge.objects.values_list("model", flat=True)) == ["repointed"]

    with pytest.raises(RuntimeError), transaction.atomic():
        assert repoints_of(lambda: relink(route, [a])) == ["repointed"]
        raise RuntimeError("the change fails after all")
    assert CachePurge.objects.count() == 1
    assert [link.endpoint for link in route.chain.all()] == [b]


def test_the_reason_names_what_went_and_what_answers_first() -> None:
    a = Upstream("openai", "http://a/v1", "gpt")
    b = Upstream("openai", "http://b/v1", "llama")

    assert repointing.Repoint("m", before=(a,), after=(b,)).reason == (
        "it no longer calls gpt at http://a/v1 (openai); "
        "its primary upstream is now llama at http://b/v1 (openai)"
    )
    assert repointing.Repoint("m", before=(a, b), after=(b, a)).reason == (
        "its primary upstream is now llama at http://b/v1 (openai)"
    )
