"""Any change to keys, routes or endpoints moves the registry version."""

from typing import Any

from django.db.models.signals import post_delete, post_save

from routing import registry
from routing.models import ModelEndpoint, Route, RouteEndpoint, ServiceKey


def _config_changed(sender: type, **kwargs: Any) -> None:
    registry.bump_version()


def connect() -> None:
    for model in (ModelEndpoint, Route, RouteEndpoint, ServiceKey):
        post_save.connect(_config_changed, sender=model, dispatch_uid=f"registry-{model.__name__}")
        post_delete.connect(
            _config_changed, sender=model, dispatch_uid=f"registry-del-{model.__name__}"
        )
