"""A Celery worker must survive Redis going away with tasks in flight.

kombu 5.7.0's Redis transport, releasing the broker connection after Redis went away,
restores the unacknowledged messages through a connection it has already dropped:
`_connparams` reads `self.connection.client.hostname` of None and raises AttributeError
(the family of celery/kombu#970). Celery's consumer takes that for an unrecoverable error
and the worker exits; with late acks there are always unacknowledged messages when a
task is running. Left unrestored, the messages stay in kombu's unacked set and come back
after the visibility timeout, and the job reaper resends jobs sooner (gateway/jobs.py).
"""

import logging
from typing import Any

from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)


def keep_workers_through_redis_outages() -> None:
    restore_unacked = kombu_redis.QoS.restore_unacked
    if getattr(restore_unacked, "keeps_worker", False):
        return

    def restore_or_leave(self: Any, client: Any = None) -> Any:
        try:
            return restore_unacked(self, client)
        except AttributeError as exc:  # the connection is gone (see above)
            log.warning("unacknowledged messages left for the visibility timeout: %s", exc)
            return None

    restore_or_leave.keeps_worker = True  # type: ignore[attr-defined]
    kombu_redis.QoS.restore_unacked = restore_or_leave  # type: ignore[method-assign]
