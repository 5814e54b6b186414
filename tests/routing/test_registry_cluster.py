"""Service-key changes across processes: a key changed, revoked or deleted through the ORM
or admin is honoured by two daphne processes within a second (routing/registry.py)."""

from collections.abc import Iterator

import pytest
from django.test import Client as BrowserClient
from django.utils import timezone

from routing.models import ServiceKey
from tests.personas import Client, make_client, make_endpoint, make_model, wait_for_key
from tests.processes import Process, http, server_env, start_gateway, stop_process, wait_until

pytestmark = pytest.mark.embedded  # revocation must hold on the default SQLite setup too

# The suite refreshes every 0.1 s; a second is the promise at the default 0.5 s.
HONOURED_WITHIN_S = 1.0


@pytest.fixture(scope="module")
def nodes(django_db_setup: None) -> Iterator[tuple[Process, Process]]:
    a = start_gateway("registry-a", server_env())
    b = start_gateway("registry-b", server_env())
    yield a, b
    stop_process(a)
    stop_process(b)


@pytest.fixture
def erin(transactional_db: None, nodes: tuple[Process, Process]) -> Client:
    """Erin's service: a key both nodes know, and a model both list for it."""
    make_model("listed", [make_endpoint("listed-ep", "http://127.0.0.1:9/v1")])
    client = make_client("erin-service")
    for node in nodes:
        wait_for_key(node, client)
        wait_until(lambda node=node: models_listed(node, client) == ["listed"])
    return client


def models_listed(node: Process, client: Client) -> list[str] | None:
    reply = http(f"{node.url}/v1/models", key=client.key)
    return [model["id"] for model in reply.json()["data"]] if reply.status == 200 else None


def refused_on_both(nodes: tuple[Process, Process], client: Client, code: str) -> None:
    for node in nodes:
        wait_until(
            lambda node=node: http(f"{node.url}/v1/models", key=client.key).status == 401,
            timeout_s=HONOURED_WITHIN_S,
        )
        reply = http(f"{node.url}/v1/models", key=client.key)
        assert reply.json()["error"]["code"] == code


def test_a_key_changed_through_the_orm_is_honoured_by_every_process(
    nodes: tuple[Process, Process], erin: Client
) -> None:
    key = ServiceKey.objects.get(pk=erin.key_id)
    key.allowed_models = ["elsewhere"]
    key.save()

    for node in nodes:
        wait_until(lambda node=node: models_listed(node, erin) == [], timeout_s=HONOURED_WITHIN_S)


def test_a_key_revoked_in_admin_is_refused_by_every_process(
    nodes: tuple[Process, Process], erin: Client, admin_browser: BrowserClient
) -> None:
    response = admin_browser.post(
        "/admin/routing/servicekey/",
        {"action": "revoke", "_selected_action": [erin.key_id]},
        follow=True,
    )
    assert response.status_code == 200

    refused_on_both(nodes, erin, "revoked_api_key")


def test_a_deleted_key_is_refused_by_every_process(
    nodes: tuple[Process, Process], erin: Client
) -> None:
    ServiceKey.objects.get(pk=erin.key_id).delete()

    refused_on_both(nodes, erin, "invalid_api_key")


def test_a_key_revoked_by_a_bulk_update_is_refused_by_every_process(
    nodes: tuple[Process, Process], erin: Client
) -> None:
    ServiceKey.objects.filter(pk=erin.key_id).update(revoked_at=timezone.now())

    refused_on_both(nodes, erin, "revoked_api_key")
