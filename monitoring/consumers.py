import contextlib
from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from monitoring import producer
from monitoring.snapshot import WINDOWS


class DashboardConsumer(AsyncJsonWebsocketConsumer):
    """Forwards the producer's snapshots to one staff member's dashboard.

    Client → server: {"window": "15m" | "1h" | "24h" | "7d"}. Server → client: DashboardSnapshot.
    """

    window = "1h"
    joined = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # A consumer that fails (its channel layer's read, say) gets no `disconnect`:
            # it leaves its group here, or the group keeps the dead member until it expires.
            with contextlib.suppress(Exception):
                await self._leave()

    async def connect(self) -> None:
        user = self.scope.get("user")
        if not (user and user.is_authenticated and user.is_staff):
            await self.close(code=4403)
            return
        await self.channel_layer.group_add(producer.group_name(self.window), self.channel_name)
        self.joined = True
        await self.accept()
        producer.ensure_running()
        await self.send_json(await producer.latest(self.window))

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        window = content.get("window") if isinstance(content, dict) else None
        if window not in WINDOWS or window == self.window:
            return
        await self.channel_layer.group_discard(producer.group_name(self.window), self.channel_name)
        self.window = window
        await self.channel_layer.group_add(producer.group_name(window), self.channel_name)
        await self.send_json(await producer.latest(window))

    async def disconnect(self, code: int) -> None:
        await self._leave()

    async def _leave(self) -> None:
        if self.joined:
            self.joined = False
            await self.channel_layer.group_discard(
                producer.group_name(self.window), self.channel_name
            )

    async def snapshot_push(self, event: dict[str, Any]) -> None:
        await self.send_json(event["snapshot"])
