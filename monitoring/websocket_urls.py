from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path

from monitoring.consumers import DashboardConsumer

# Cross-origin handshakes and anonymous or non-staff users are refused.
websocket_application = AllowedHostsOriginValidator(
    AuthMiddlewareStack(URLRouter([path("ws/monitoring/", DashboardConsumer.as_asgi())]))
)
