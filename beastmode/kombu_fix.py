"""A Celery worker must survive Redis going away with tasks in flight.

kombu 5.7.0's Redis transport builds connection parameters from its broker connection even
after it dropped it, when Redis went away: releasing the connection restores the
unacknowledged messages, and a task that ends acknowledges its message, both through
`Channel._connparams`, which then reads an attribute of None and raises AttributeError
(the family of celery/kombu#970). Celery does not take that for a connection error: the
worker exited ("Unrecoverable error: AttributeError(... 'hostname')", "... 'client'"),
and with late acks there always are such messages while tasks run. Here it is the
connection error it is: Celery logs it and reconnects; an unacknowledged message comes back
after the visibility timeout, and the job reaper resends its job sooner (gateway/jobs.py).
"""

from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


def keep_workers_through_redis_outages() -> None:
    channel: Any = kombu_redis.Channel
    connparams = channel._connparams
    if getattr(connparams, "keeps_worker", False):
        return

    def connparams_or_connection_error(self: Any, asynchronous: bool = False) -> Any:
        if self.connection is None or self.connection.client is None:
            raise RedisConnectionError("the broker connection is gone (Redis went away)")
        return connparams(self, asynchronous=asynchronous)

    connparams_or_connection_error.keeps_worker = True  # type: ignore[attr-defined]
    channel._connparams = connparams_or_connection_error
