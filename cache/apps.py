from typing import Any

from django.apps import AppConfig


class CacheConfig(AppConfig):
    name = "cache"
    verbose_name = "Response cache"

    def ready(self) -> None:
        from routing import registry

        registry.reloaded.connect(_apply_purges, dispatch_uid="cache-purges")


def _apply_purges(sender: type, **kwargs: Any) -> None:
    from cache import purge

    purge.apply_new_purges()
