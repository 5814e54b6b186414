from django.apps import AppConfig


class RoutingConfig(AppConfig):
    name = "routing"
    verbose_name = "Routing: models, routes and service keys"

    def ready(self) -> None:
        from beastmode.lib import changes
        from routing import signals

        signals.connect()
        changes.announced.connect(_bump_version, dispatch_uid="routing-bump-version")


def _bump_version(sender: object, **kwargs: object) -> None:
    from routing import registry

    registry.bump_version()
