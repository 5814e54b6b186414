"""RedBeat's scheduler, kept alive through Redis outages and restarts.

RedBeat ends the beat process when a tick cannot extend its lock: with Redis away
(ConnectionError) or back but empty after a restart (LockNotOwnedError), every
`worker -B` in the cluster lost its beat for good, and with it the job reaper. Here such a
tick sends nothing; a later one takes the lock again once Redis answers and, since Redis
may have come back empty, stores the schedule again. So one beat runs again within a tick
or two of Redis's return.
"""

import logging
from typing import Any

from redbeat import RedBeatScheduler
from redbeat.schedulers import LUA_EXTEND_TO_SCRIPT, get_redis
from redis.exceptions import LockNotOwnedError, RedisError

log = logging.getLogger(__name__)


class ResilientRedBeatScheduler(RedBeatScheduler):  # type: ignore[misc]
    lock: Any = None  # a redis-py Lock while this beat holds the lock

    def tick(self, min: Any = min, **kwargs: Any) -> float:
        try:
            if self.lock_key and self.lock is None and not self._take_lock():
                return float(self.max_interval)
            return float(super().tick(min=min, **kwargs))
        except LockNotOwnedError:
            log.warning("beat: its lock is gone (Redis restarted?); taking it again")
            self.lock = None
        except RedisError as exc:
            log.warning("beat: Redis unavailable (%s); trying again", exc)
        return float(self.max_interval)

    def setup_schedule(self) -> None:
        """Store the schedule in Redis; with Redis away at start, once it takes the lock."""
        try:
            super().setup_schedule()
        except RedisError as exc:
            log.warning("beat: Redis unavailable at start (%s); trying again", exc)

    def _take_lock(self) -> bool:
        client = get_redis(self.app)
        lock = client.lock(self.lock_key, timeout=self.lock_timeout, sleep=self.max_interval)
        lock.lua_extend = client.register_script(LUA_EXTEND_TO_SCRIPT)  # as RedBeat does
        if not lock.acquire(blocking=False):
            return False  # another beat holds it
        self.lock = lock
        self.setup_schedule()
        log.info("beat: took the lock again")
        return True
