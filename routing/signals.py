"""Any change to keys, routes, endpoints or cache namespaces moves the registry version."""

from typing import Any

from django.db.models.signals import post_delete, post_save

from cache.models import CacheNamespace
from routing import registry
from routing.models import ModelEndpoint, Route, RouteEndpoint, ServiceKey


def _config_changed(sender: type, **kwargs: Any) -> None:
    registry.bump_version()


def connect() -> None:
    # A deleted namespace sets its keys' field to NULL in one UPDATE, which sends no
    # signal for the keys: its own delete is what tells the processes.
    for model in (ModelEndpoint, Route, RouteEndpoint, ServiceKey, CacheNamespace):
        post_save.connect(_config_changed, sender=model, dispatch_uid=f"registry-{model.__name__}")
        post_delete.connect(
            _config_changed, sender=model, dispatch_uid=f"registry-del-{model.__name__}"
        )
