"""Who calls the gateway in tests (service keys) and the models they call, made in the
test database, and waiting until the gateway under test sees them."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from monitoring.models import RequestRecord
from routing.models import ModelEndpoint, Route, RouteEndpoint
from routing.service_keys import create_service_key
from tests.processes import Process, http, wait_until


@dataclass
class Client:
    """A service calling BeastMode: its raw key and the id of its key row."""

    name: str
    key: str
    key_id: int


def make_client(name: str, **kwargs: Any) -> Client:
    row, raw_key = create_service_key(name, **kwargs)
    return Client(name=name, key=raw_key, key_id=row.id)


def make_model(model_name: str, endpoints: list[ModelEndpoint], **route_fields: Any) -> Route:
    # In one transaction, as admin saves a route with its endpoints: a gateway refreshing
    # its registry in between would see the model without endpoints (503 no_endpoint).
    with transaction.atomic():
        route = Route.objects.create(model_name=model_name, **route_fields)
        for position, endpoint in enumerate(endpoints):
            RouteEndpoint.objects.create(route=route, endpoint=endpoint, position=position)
    return route


def make_endpoint(name: str, base_url: str, **fields: Any) -> ModelEndpoint:
    api_key = fields.pop("api_key", "")
    defaults: dict[str, Any] = {
        "upstream_model": f"{name}-model",
        "connect_timeout_s": 1.0,
        "first_byte_timeout_s": 2.0,
        "total_timeout_s": 5.0,
        "max_retries": 0,
        "input_cost_per_1m": 1,
        "output_cost_per_1m": 2,
    }
    endpoint = ModelEndpoint(name=name, base_url=base_url, **{**defaults, **fields})
    endpoint.set_api_key(api_key)
    endpoint.save()
    return endpoint


ModelFactory = Callable[..., str]


def record_for(request_id: str, timeout_s: float = 5.0) -> RequestRecord:
    """The request's record, once the gateway's batch writer has written it."""
    return wait_until(
        lambda: RequestRecord.objects.filter(request_id=request_id).first(), timeout_s=timeout_s
    )


def wait_for_model(gateway: Process, client: Client, model_name: str) -> None:
    """Block until the gateway's in-process registry has picked up a new route."""

    def visible() -> bool:
        reply = http(f"{gateway.url}/v1/models", key=client.key)
        return reply.status == 200 and model_name in {m["id"] for m in reply.json()["data"]}

    wait_until(visible)


def wait_for_key(gateway: Process, client: Client) -> Client:
    """Block until the gateway's in-process registry knows a new key."""
    wait_until(lambda: http(f"{gateway.url}/v1/models", key=client.key).status == 200)
    return client
