from typing import Any

from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.urls import path

from monitoring.consumers import DashboardConsumer


class SameOriginValidator:
    """Accepts a websocket handshake only from the page's own origin: scheme, host and
    port equal to the connection's (ws → http, wss → https, as the Host header names
    it), or one of CSRF_TRUSTED_ORIGINS (behind a proxy that ends TLS, say). Channels'
    AllowedHostsOriginValidator compares the host only: a staff cookie sent from any
    port of the same host was accepted."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        headers = dict(scope.get("headers", ()))
        origin = headers.get(b"origin", b"").decode("latin-1")
        host = headers.get(b"host", b"").decode("latin-1")
        scheme = "https" if scope.get("scheme") == "wss" else "http"
        if origin and (origin == f"{scheme}://{host}" or origin in settings.CSRF_TRUSTED_ORIGINS):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)


# Cross-origin handshakes and anonymous or non-staff users are refused.
websocket_application = SameOriginValidator(
    AuthMiddlewareStack(URLRouter([path("ws/monitoring/", DashboardConsumer.as_asgi())]))
)
