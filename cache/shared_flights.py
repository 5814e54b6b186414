"""One flight per key across every process and node, through Redis.

A process's leader of a key (cache/flights.py) claims the key in Redis before it calls
upstream. The first claim leads the cluster; a process that finds another's claim follows
it, reading until the leader's answer has landed (as soon as the leader has it, before the
lower tiers are written) or the claim is gone (the leader failed, or its process died and
the claim expired with the leader's budget): then the next claim leads.

A stored answer replaces the claim for a moment, so that a request whose lookup missed
just before the answer was stored takes it too. An answer that is not stored is landed for
the followers of that leader only; the claim is dropped, so later requests ask upstream.
With Redis away (the L2 breaker), every process leads its own flights.
"""

import time
from dataclasses import asdict, dataclass

import orjson

from cache.layers import tiers
from cache.tiers import Entry

PREFIX = "bm:flight:"
_LEADER = b"leader:"
# How long a landed answer stays readable, for followers elsewhere (they read at least
# every MAX_POLL_S) and for claims that were racing its landing.
LANDED_TTL_MS = 2000
FIRST_POLL_S, MAX_POLL_S = 0.002, 0.025

# KEYS: the claim, the answer of the leader followed so far. ARGV: this claim, its ttl (ms).
# Returns the answer, else the claim there, else nil when this claim was made (it leads).
_CLAIM = """
local answer = redis.call('GET', KEYS[2])
if answer then return answer end
local current = redis.call('GET', KEYS[1])
if current then return current end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""
# KEYS: the claim, this leader's answer. ARGV: this claim, the answer, its ttl, stored.
_LAND = """
if ARGV[4] == '1' then
  if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  end
  return 1
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""
_DROP = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class Claim:
    """What a claim found: `leads` (this claim leads), else `answer` (entry, stored) once
    the leader's answer landed, else `leader` (the token of the claim followed); all
    empty when Redis is away (this process decides alone)."""

    leads: bool = False
    answer: tuple[Entry, bool] | None = None
    leader: str = ""

    @property
    def alone(self) -> bool:
        return not (self.leads or self.answer or self.leader)


def claim(key: str, token: str, ttl_s: float, following: str = "") -> Claim:
    """Claim `key` for `ttl_s` with `token`, unless another claim (or its answer) is there.
    `following`: the leader this process follows already (its unstored answer is read)."""
    keys = (PREFIX + key, _answer_key(following or "-"))
    found = tiers().l2.run(
        lambda client: [client.eval(_CLAIM, 2, *keys, _LEADER + token.encode(), _ms(ttl_s))]
    )
    if found is None:
        return Claim()
    value = found[0]
    if value is None:
        return Claim(leads=True)
    if value.startswith(_LEADER):
        return Claim(leader=value.removeprefix(_LEADER).decode())
    try:
        landed = orjson.loads(value)
        return Claim(answer=(Entry(**landed["entry"]), landed["stored"]))
    except (orjson.JSONDecodeError, TypeError, KeyError):  # landed by another version
        return Claim()


def land(key: str, token: str, entry: Entry, stored: bool) -> None:
    """Give this leader's answer to its followers elsewhere, and end its claim."""
    value = orjson.dumps({"entry": asdict(entry), "stored": stored})
    keys = (PREFIX + key, _answer_key(token))
    ttl_ms = min(LANDED_TTL_MS, _ms(entry.remaining_s(time.time())))
    args = (_LEADER + token.encode(), value, ttl_ms, "1" if stored else "0")
    tiers().l2.run(lambda client: client.eval(_LAND, 2, *keys, *args))


def drop(key: str, token: str) -> None:
    """Give up this leader's claim (it has no answer): the next claim leads."""
    marker = _LEADER + token.encode()
    tiers().l2.run(lambda client: client.eval(_DROP, 1, PREFIX + key, marker))


def _answer_key(token: str) -> str:
    return f"{PREFIX}answer:{token}"


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
