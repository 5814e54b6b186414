from django.apps import AppConfig


class RoutingConfig(AppConfig):
    name = "routing"
    verbose_name = "Routing: models, routes and service keys"

    def ready(self) -> None:
        from routing import signals

        signals.connect()
