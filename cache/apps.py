from typing import Any

from django.apps import AppConfig


class CacheConfig(AppConfig):
    name = "cache"
    verbose_name = "Response cache"

    def ready(self) -> None:
        from beastmode.lib import changes

        # Every process follows purges and marked pairs when it reloads the shared config.
        changes.reloaded.connect(_follow_admin_changes, dispatch_uid="cache-admin-changes")


def _follow_admin_changes(sender: type, **kwargs: Any) -> None:
    from cache import purge
    from cache.semantic import false_pairs

    purge.apply_new_purges()
    false_pairs.reload()
