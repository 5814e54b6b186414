from collections.abc import Callable

import pytest

from routing.models import ModelEndpoint
from tests.conftest import (
    Client,
    Process,
    make_client,
    make_endpoint,
    make_model,
    wait_for_key,
    wait_for_model,
)


@pytest.fixture
def alice(transactional_db: None, gateway: Process) -> Client:
    """Alice's service: a key that may use every model."""
    return wait_for_key(gateway, make_client("alice-service"))


@pytest.fixture
def bob(transactional_db: None, gateway: Process) -> Client:
    """Bob's service: a key restricted to the model 'bob-only'."""
    return wait_for_key(gateway, make_client("bob-service", allowed_models=["bob-only"]))


ModelFactory = Callable[..., str]


@pytest.fixture
def model_with(gateway: Process, fake_upstream: Process, alice: Client) -> ModelFactory:
    """Make a model routed to fake-upstream endpoints given as path modes, e.g.
    model_with("status/500", "") → primary answers 500, fallback answers OK.
    Returns the model name once the gateway can route it."""
    counter = iter(range(1_000_000))

    def factory(*modes: str, model_name: str | None = None, **endpoint_fields: object) -> str:
        n = next(counter)
        name = model_name or f"m{n}"
        endpoints: list[ModelEndpoint] = []
        for i, mode in enumerate(modes):
            prefix = f"/{mode}" if mode else ""
            base_url = (
                mode
                if mode.startswith(("http://", "https://"))
                else (f"{fake_upstream.url}{prefix}/v1")
            )
            endpoints.append(make_endpoint(f"{name}-ep{i}", base_url, **endpoint_fields))
        make_model(name, endpoints)
        wait_for_model(gateway, alice, name)
        return name

    return factory
