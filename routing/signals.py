"""Any change to keys, routes, endpoints or cache namespaces moves the registry version;
a change to service keys also logs which ones, so processes read only those again."""

from typing import Any

from django.db.models.signals import post_delete, post_save, pre_delete

from cache.models import CacheNamespace
from routing import registry
from routing.models import ModelEndpoint, Route, RouteEndpoint, ServiceKey


def _config_changed(sender: type, **kwargs: Any) -> None:
    registry.bump_version()


def _key_changed(sender: type, instance: ServiceKey, **kwargs: Any) -> None:
    registry.bump_version(key_ids=[instance.pk])


def _namespace_deleting(sender: type, instance: CacheNamespace, **kwargs: Any) -> None:
    # Deleting a namespace sets its keys' field to NULL in one UPDATE that sends no signal
    # for the keys: logged here, in the same transaction, before it runs.
    keys = ServiceKey.objects.filter(cache_namespace=instance).values_list("id", flat=True)
    registry.bump_version(key_ids=list(keys))


def connect() -> None:
    for model in (ModelEndpoint, Route, RouteEndpoint, CacheNamespace):
        post_save.connect(_config_changed, sender=model, dispatch_uid=f"registry-{model.__name__}")
        post_delete.connect(
            _config_changed, sender=model, dispatch_uid=f"registry-del-{model.__name__}"
        )
    post_save.connect(_key_changed, sender=ServiceKey, dispatch_uid="registry-ServiceKey")
    post_delete.connect(_key_changed, sender=ServiceKey, dispatch_uid="registry-del-ServiceKey")
    pre_delete.connect(
        _namespace_deleting, sender=CacheNamespace, dispatch_uid="registry-pre-del-namespace"
    )
