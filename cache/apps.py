from typing import Any

from django.apps import AppConfig


class CacheConfig(AppConfig):
    name = "cache"
    verbose_name = "Response cache"

    def ready(self) -> None:
        from routing import registry

        registry.reloaded.connect(_follow_admin_changes, dispatch_uid="cache-admin-changes")


def _follow_admin_changes(sender: type, **kwargs: Any) -> None:
    from cache import false_pairs, purge

    purge.apply_new_purges()
    false_pairs.reload()
