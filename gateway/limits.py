"""Per-key limits: requests and tokens per minute, requests at once, a spend budget.

A request of a limited key is checked once, when it arrives: the request part (requests
per minute, requests at once) is taken or the request is refused; the upstream part (its
estimated tokens, the budget) is taken with it, or refused only if the request then calls
upstream, so a cache hit or a coalesced answer costs no tokens and no budget. When it
ends its usage is settled: the slot is released, the token estimate corrected to what
the upstream reported, the cost added to the spend.

Rates are GCRA buckets (`limit` per minute, refilling continuously, as OpenAI's limits
do); requests at once are leases that expire with the route's worst case, so the slots
of a process that died come back. With Redis configured every process and node share the
state (Lua scripts on Redis's clock). Far from every limit a request is admitted on the
process's view of that state while Redis takes its part; near one it waits for Redis
(_Views). Without Redis, or while Redis is away and RATE_LIMITS_WITHOUT_REDIS is "open",
each process enforces the limits on its own. Spend is durable in KeySpend (written with
the records); a period's shared counter is seeded from it.
"""

import asyncio
import functools
import logging
import math
import threading
import time
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis.asyncio
from django.conf import settings
from django.utils import timezone
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from beastmode.lib.chat_request import ChatRequest
from beastmode.lib.errors import GatewayError
from cache import layers
from cache import service as cache_service
from routing import spend
from routing.key_limits import KeyLimits, RateLimits, period_bounds
from routing.registry import KeyConfig

log = logging.getLogger(__name__)

Headers = list[tuple[bytes, bytes]]

WINDOW_MS = 60_000.0
PREFIX = "bm:limit:"
BATCH_S = 0.005  # a give-back waits at most this long for the next pipeline to Redis
REDIS_WAIT_S = 0.25  # a request waits this long at most for Redis, then is decided in process
TOTAL_SPEND_TTL_S = 30 * 86400  # a `total` budget's counter is seeded again after this


@dataclass(frozen=True, slots=True)
class Bucket:
    """`limit` per minute at `key`; this step takes `cost` from it (0: only looks).
    Upstream buckets (tokens) belong to the upstream part of a check."""

    key: str
    limit: int
    cost: float
    upstream: bool = False


@dataclass(frozen=True, slots=True)
class Check:
    """One step's limits in two parts. The request part (request buckets; slots taken by
    `member` for `lease_ms`) is taken whole or refused; then the upstream part (token
    buckets; the budget against the spend counter at `spend_key`) is taken whole, or
    refused without refusing the request: a cache hit needs only the request part."""

    buckets: tuple[Bucket, ...] = ()
    slots: tuple[tuple[str, int], ...] = ()
    member: str = ""
    lease_ms: float = 0.0
    spend_key: str = ""
    budget: float | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """`refused` (the request part), `upstream_refused` (the upstream part): "" when
    taken, else "bucket:<i>", "slot:<i>", "budget", or "seed" (no spend counter yet),
    each with its retry time. Per bucket: (remaining, ms until full); the spend."""

    refused: str
    retry_ms: float
    upstream_refused: str
    upstream_retry_ms: float
    buckets: tuple[tuple[int, float], ...]
    spend: float = 0.0
    slots_held: tuple[int, ...] = ()


@dataclass(slots=True)
class Usage:
    """What a request holds and was charged, until it is settled."""

    key: KeyConfig
    model: str
    member: str
    slots: tuple[str, ...] = ()
    slots_shared: bool = False  # taken in Redis (else in this process)
    charged: bool = False  # its upstream part was taken: it may call upstream
    token_buckets: tuple[Bucket, ...] = ()  # each with the tokens reserved
    spend_key: str = ""
    charge_shared: bool = False
    upstream_refusal: GatewayError | None = None  # raised if it needs upstream
    headers: Headers = field(default_factory=list)
    settled: bool = False


# --- the shared state: one Lua script for checks, one for settling ---------------------

# KEYS: buckets, then slots, then the spend key (when ARGV[3] >= 0).
# ARGV: #buckets, #slots, budget (-1: none), member, lease ms, force (1: take all, refuse
# nothing), then per bucket its limit, cost and part (1: upstream), then per slot its
# limit. Returns, comma-separated: refused, retry ms, upstream refused, upstream retry ms,
# spend, #buckets, then per bucket remaining and ms until full, then per slot the requests
# holding one.
_CHECK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local nb, ns, budget = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local force = ARGV[6] == '1'
local refused, retry, up_refused, up_retry, spend = '', 0, '', 0, 0
local tats, afters, upstream = {}, {}, {}
for i = 1, nb do
  local limit, cost = tonumber(ARGV[4 + 3 * i]), tonumber(ARGV[5 + 3 * i])
  upstream[i] = ARGV[6 + 3 * i] == '1'
  local tat = math.max(tonumber(redis.call('GET', KEYS[i]) or '0'), now)
  local after = tat + cost * 60000 / limit
  tats[i], afters[i] = tat, after
  if cost > 0 and after - 60000 > now and not force then
    if upstream[i] then
      if up_refused == '' then up_refused, up_retry = 'bucket:' .. i, after - 60000 - now end
    elseif refused == '' then
      refused, retry = 'bucket:' .. i, after - 60000 - now
    end
  end
end
for i = 1, ns do
  local key, limit = KEYS[nb + i], tonumber(ARGV[6 + 3 * nb + i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if refused == '' and not force and redis.call('ZCARD', key) >= limit then
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    refused, retry = 'slot:' .. i, math.min(1000, tonumber(first[2]) - now)
  end
end
if budget >= 0 and up_refused == '' then
  local stored = redis.call('GET', KEYS[nb + ns + 1])
  if not stored then
    if not force then up_refused = 'seed' end
  else
    spend = tonumber(stored)
    if spend >= budget and not force then up_refused = 'budget' end
  end
end
if refused == '' then
  for i = 1, nb do
    if (not upstream[i] or up_refused == '') and afters[i] > tats[i] then
      tats[i] = afters[i]
      redis.call('SET', KEYS[i], tostring(tats[i]), 'PX', math.ceil(tats[i] - now))
    end
  end
  for i = 1, ns do
    redis.call('ZADD', KEYS[nb + i], now + tonumber(ARGV[5]), ARGV[4])
    redis.call('PEXPIRE', KEYS[nb + i], math.ceil(tonumber(ARGV[5])))
  end
end
local out = {refused, retry, up_refused, up_retry, spend, nb}
for i = 1, nb do
  local interval = 60000 / tonumber(ARGV[4 + 3 * i])
  table.insert(out, math.floor((60000 - (tats[i] - now)) / interval))
  table.insert(out, tats[i] - now)
end
for i = 1, ns do table.insert(out, redis.call('ZCARD', KEYS[nb + i])) end
return table.concat(out, ',')
"""

# KEYS: slots, then buckets, then the spend key. ARGV: #slots, #buckets, member, cost,
# then per bucket its limit and the tokens to give back (negative: to take).
_SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local ns, nb = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 1, ns do redis.call('ZREM', KEYS[i], ARGV[3]) end
for i = 1, nb do
  local key = KEYS[ns + i]
  local interval = 60000 / tonumber(ARGV[3 + 2 * i])
  local tat = math.max(tonumber(redis.call('GET', key) or '0'), now)
  local new = tat - tonumber(ARGV[4 + 2 * i]) * interval
  if new > now then
    redis.call('SET', key, tostring(new), 'PX', math.ceil(new - now))
  else
    redis.call('DEL', key)
  end
end
local spend = KEYS[ns + nb + 1]
if spend and tonumber(ARGV[4]) > 0 and redis.call('EXISTS', spend) == 1 then
  redis.call('INCRBYFLOAT', spend, ARGV[4])
end
return 1
"""


def _check_args(check: Check, *, force: bool = False) -> tuple[list[str], list[Any]]:
    keys = [b.key for b in check.buckets] + [key for key, _ in check.slots]
    args: list[Any] = [len(check.buckets), len(check.slots)]
    args += [-1 if check.budget is None else check.budget, check.member, check.lease_ms]
    args.append(int(force))
    for b in check.buckets:
        args += [b.limit, b.cost, int(b.upstream)]
    args += [limit for _, limit in check.slots]
    if check.budget is not None:
        keys.append(check.spend_key)
    return keys, args


def _verdict(reply: bytes) -> Verdict:
    values = reply.decode().split(",")
    end = 6 + 2 * int(values[5])
    numbers = [float(v) for v in values[6:end]]
    pairs = tuple((int(numbers[i]), numbers[i + 1]) for i in range(0, len(numbers), 2))
    held = tuple(int(v) for v in values[end:])
    return Verdict(
        values[0], float(values[1]), values[2], float(values[3]), pairs, float(values[4]), held
    )


@dataclass(slots=True)
class _Call:
    """A script call queued for Redis: a check whose caller awaits `reply`, a take (a far
    admission's, `reply` None) or a give-back (`check` None). A check's or take's verdict
    renews the view; `base`: the overruns of its buckets when it was queued."""

    script: Any
    keys: list[str]
    args: list[Any]
    check: Check | None = None
    base: tuple[float, ...] = ()
    reply: asyncio.Future[Any] | None = None


class _LoopClient:
    """An event loop's Redis client, the scripts (run by their SHA once loaded) and the
    calls queued for Redis. One pipeline at a time carries every queued call, in order;
    calls queued meanwhile go with the next. So a process holds one connection for its
    limits whatever its load, and the busier it is the more each pipeline carries."""

    def __init__(self, client: Any) -> None:
        self.redis = client
        self.check = client.register_script(_CHECK)
        self.settle = client.register_script(_SETTLE)
        self.queue: list[_Call] = []
        self.sender: asyncio.Task[None] | None = None  # sends the queue until it is empty
        self.timer: asyncio.TimerHandle | None = None  # a give-back's send, BATCH_S later


class _SharedState:
    """The limits' state in Redis, through an asyncio client per event loop (the
    cache's Redis client on its I/O threads settles for code outside an event loop)."""

    FAILURES, COOLDOWN_S = 3, 10.0
    # A pipeline that has not answered in this long counts as a failure of Redis. A check
    # gives up sooner (REDIS_WAIT_S: that request is decided in this process), as its wait
    # also holds the time a busy event loop takes to read the answer.
    PIPELINE_WAIT_S = 1.0

    def __init__(self) -> None:
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._failures, self._open_until = 0, 0.0

    @property
    def available(self) -> bool:
        return bool(settings.REDIS_URL) and time.monotonic() >= self._open_until

    async def check(self, check: Check) -> Verdict | None:
        """The verdict, sent after everything this process queued before (so Redis counts
        it), or None when Redis is away or slow."""
        if not self.available:
            return None
        client = self._client()
        reply = asyncio.get_running_loop().create_future()
        keys, args = _check_args(check)
        call = _Call(client.check, keys, args, check, views.overrun_base(check), reply)
        self._queue(client, call, now=True)
        try:
            async with asyncio.timeout(REDIS_WAIT_S):
                result = await asyncio.shield(reply)
        except TimeoutError:
            return None
        return _verdict(result) if isinstance(result, bytes) else None

    async def seed(self, spend_key: str, spend: float, ttl_s: float) -> None:
        try:
            async with asyncio.timeout(REDIS_WAIT_S):
                await self._client().redis.set(
                    spend_key, repr(spend), nx=True, px=int(ttl_s * 1000)
                )
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)

    def take(self, check: Check) -> None:
        """Take `check` whole (refusing nothing), sent at once without waiting for the
        reply (so that another node's check that follows counts it); its verdict renews
        the view."""
        client = self._client()
        keys, args = _check_args(check, force=True)
        self._queue(client, _Call(client.check, keys, args, check, views.overrun_base(check)),
                    now=True)  # fmt: skip

    def settle(self, keys: list[str], args: list[Any]) -> None:
        """Settle within BATCH_S, with what else is sent then; from code outside an event
        loop, on the cache's I/O threads."""
        try:
            client = self._client()
        except RuntimeError:
            run = lambda redis: redis.eval(_SETTLE, len(keys), *keys, *args)  # noqa: E731
            cache_service.submit_io(layers.tiers().l2.run, run)
            return
        self._queue(client, _Call(client.settle, keys, args), now=False)

    async def close(self) -> None:
        """Send what is queued and forget this loop's client (the loop is ending:
        asyncio.run in workers)."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is None:
            return
        if client.timer is not None:
            client.timer.cancel()
        if client.sender is None and client.queue:
            client.sender = asyncio.get_running_loop().create_task(self._send_all(client))
        if client.sender is not None:
            await client.sender

    def _queue(self, client: "_LoopClient", call: _Call, *, now: bool) -> None:
        """Queue `call`; sent at once (`now`) or within BATCH_S, after the pipeline in
        flight if there is one."""
        client.queue.append(call)
        if client.sender is not None:
            return  # it sends the queue once its pipeline is back
        loop = asyncio.get_running_loop()
        if now:
            if client.timer is not None:
                client.timer.cancel()
                client.timer = None
            client.sender = loop.create_task(self._send_all(client))
        elif client.timer is None:
            client.timer = loop.call_later(BATCH_S, self._send_later, client)

    def _send_later(self, client: "_LoopClient") -> None:
        client.timer = None
        if client.sender is None and client.queue:
            client.sender = asyncio.get_running_loop().create_task(self._send_all(client))

    async def _send_all(self, client: "_LoopClient") -> None:
        """Send the queue, one pipeline at a time, until it is empty."""
        try:
            while client.queue:
                batch, client.queue = client.queue, []
                replies = await self._send(client, batch)
                self._read(client, batch, replies)
        finally:
            client.sender = None

    async def _send(self, client: "_LoopClient", batch: list[_Call]) -> list[Any]:
        """The replies to `batch` in order (an exception for a call that failed)."""
        if not self.available:
            return [None] * len(batch)
        try:
            async with asyncio.timeout(self.PIPELINE_WAIT_S):
                replies = await self._pipeline(client, batch)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            return [exc] * len(batch)
        self._failures = 0
        return replies

    @staticmethod
    def _read(client: "_LoopClient", batch: list[_Call], replies: list[Any]) -> None:
        """Answer the checks; renew the views, each from the last verdict on its limits,
        less what this process queued after that verdict (later in the batch, or still
        queued): Redis did not count that yet."""
        last: dict[tuple[str, ...], tuple[int, _Call, bytes]] = {}
        for at, (call, reply) in enumerate(zip(batch, replies, strict=True)):
            if call.reply is not None and not call.reply.done():
                call.reply.set_result(reply)
            if call.check is not None and isinstance(reply, bytes):
                last[_shape(call.check)] = (at, call, reply)
        unseen = {shape: [0, 0.0] for shape in last}
        for at, call in enumerate([*batch, *client.queue]):
            if call.check is None or call.reply is not None:  # a give-back or a check
                continue
            shape = _shape(call.check)
            if shape in last and at > last[shape][0]:  # a take after the verdict
                unseen[shape][0] += 1
                unseen[shape][1] += _upstream_cost(call.check)
        for shape, (_, call, reply) in last.items():
            assert call.check is not None
            requests, tokens = unseen[shape]
            views.saw(call.check, _verdict(reply), unseen=(int(requests), tokens), base=call.base)

    @staticmethod
    async def _pipeline(client: "_LoopClient", batch: list[_Call]) -> list[Any]:
        replies: list[Any] = []
        for attempt in (1, 2):
            pipe = client.redis.pipeline(transaction=False)
            for call in batch:
                pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
            replies = await pipe.execute(raise_on_error=False)
            if attempt == 1 and any(isinstance(r, NoScriptError) for r in replies):
                await client.redis.script_load(_CHECK)  # Redis restarted: load them again
                await client.redis.script_load(_SETTLE)
                continue
            break
        return replies

    def _client(self) -> "_LoopClient":
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = _LoopClient(
                redis.asyncio.Redis.from_url(
                    settings.REDIS_URL,
                    socket_timeout=1,
                    socket_connect_timeout=REDIS_WAIT_S,
                    retry=Retry(NoBackoff(), 0),  # the breaker decides when to try again
                )
            )
        return client

    def _failed(self, exc: BaseException) -> None:
        self._failures += 1
        if self._failures >= self.FAILURES:
            self._open_until = time.monotonic() + self.COOLDOWN_S
            log.warning("rate limits: Redis unavailable (%r); skipped for %ss",
                        exc, self.COOLDOWN_S)  # fmt: skip


class _LocalState:
    """The same checks in this process (the embedded default; Redis away, "open")."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tats: dict[str, float] = {}
        self._slots: dict[str, dict[str, float]] = {}
        self._spend: dict[str, tuple[float, float]] = {}  # key: (spend, expires at ms)

    def check(self, check: Check) -> Verdict:
        now = time.time() * 1000
        with self._lock:
            refused, retry, up_refused, up_retry = "", 0.0, "", 0.0
            tats, afters = [], []
            for i, b in enumerate(check.buckets, 1):
                tat = max(self._tats.get(b.key, 0.0), now)
                after = tat + b.cost * WINDOW_MS / b.limit
                tats.append(tat)
                afters.append(after)
                if b.cost > 0 and after - WINDOW_MS > now:
                    if b.upstream and not up_refused:
                        up_refused, up_retry = f"bucket:{i}", after - WINDOW_MS - now
                    elif not b.upstream and not refused:
                        refused, retry = f"bucket:{i}", after - WINDOW_MS - now
            for i, (key, limit) in enumerate(check.slots, 1):
                held = self._slots.setdefault(key, {})
                for member in [m for m, until in held.items() if until <= now]:
                    del held[member]
                if not refused and len(held) >= limit:
                    refused, retry = f"slot:{i}", min(1000.0, min(held.values()) - now)
            spend = 0.0
            if check.budget is not None and not up_refused:
                stored = self._spend.get(check.spend_key)
                if stored is None or stored[1] <= now:
                    up_refused = "seed"
                else:
                    spend = stored[0]
                    up_refused = "budget" if spend >= check.budget else ""
            if not refused:
                for at, b in enumerate(check.buckets):
                    if (not b.upstream or not up_refused) and afters[at] > tats[at]:
                        tats[at] = self._tats[b.key] = afters[at]
                for key, _ in check.slots:
                    self._slots[key][check.member] = now + check.lease_ms
            states = tuple(
                (math.floor((WINDOW_MS - (tat - now)) * b.limit / WINDOW_MS), tat - now)
                for b, tat in zip(check.buckets, tats, strict=True)
            )
            in_use = tuple(len(self._slots[key]) for key, _ in check.slots)
            return Verdict(refused, retry, up_refused, up_retry, states, spend, in_use)

    def seed(self, spend_key: str, spend: float, ttl_s: float) -> None:
        with self._lock:
            self._spend.setdefault(spend_key, (spend, time.time() * 1000 + ttl_s * 1000))

    def settle(
        self, member: str, slots: tuple[str, ...], buckets: tuple[Bucket, ...], tokens: int,
        spend_key: str, cost_usd: float,
    ) -> None:  # fmt: skip
        now = time.time() * 1000
        with self._lock:
            for key in slots:
                self._slots.get(key, {}).pop(member, None)
            for b in buckets:
                interval = WINDOW_MS / b.limit
                self._tats[b.key] = (
                    max(self._tats.get(b.key, 0.0), now) - (b.cost - tokens) * interval
                )
            stored = self._spend.get(spend_key)
            if stored is not None and cost_usd > 0:
                self._spend[spend_key] = (stored[0] + cost_usd, stored[1])


shared = _SharedState()
local = _LocalState()


# --- the steps a request takes ----------------------------------------------------------


async def admit(
    key: KeyConfig, model: str, chat: ChatRequest, member: str, lease_s: float,
) -> Usage | None:  # fmt: skip
    """Admit a request of `key` for `model`, in one step: GatewayError 429 when it is over
    a rate or at its requests at once; its tokens reserved and its budget checked for the
    upstream call it may make (refused only if it makes one). None when the key has no
    limits. `lease_s`: how long its slot may be held at most (the route's worst case)."""
    limits = key.limits
    if limits is None:
        return None
    rates, model_rates = limits.rates, limits.for_model(model)
    request_buckets = tuple(
        Bucket(_key(key, scope, "rpm"), rate.rpm, 1)
        for scope, rate in (("", rates), (model, model_rates))
        if rate.rpm
    )
    token_buckets = _token_buckets(key, model, limits, estimate_tokens(chat))
    slots = tuple(
        (_key(key, scope, "parallel"), rate.max_parallel)
        for scope, rate in (("", rates), (model, model_rates))
        if rate.max_parallel
    )
    spend_key = _spend_key(key, limits, None)[0] if limits.budget_usd is not None else ""
    check = Check(
        (*request_buckets, *token_buckets), slots, member, lease_s * 1000,
        spend_key, limits.budget_usd,
    )  # fmt: skip
    if (far := views.far_from_limits(check)) is not None:
        return _admitted_on_view(key, model, check, far, request_buckets, token_buckets)
    verdict, is_shared = await _decide(check)  # (Redis's also renews the view)
    usage = Usage(key, model, member, slots=tuple(k for k, _ in slots), slots_shared=is_shared)
    usage.headers = _headers(
        request_buckets, verdict.buckets[: len(request_buckets)],
        token_buckets, verdict.buckets[len(request_buckets) :],
    )  # fmt: skip
    if verdict.refused:
        raise _refusal(key, model, check, verdict, usage.headers, upstream=False)
    if not verdict.upstream_refused:
        usage.charged, usage.charge_shared = True, is_shared
        usage.token_buckets, usage.spend_key = token_buckets, spend_key
    elif verdict.upstream_refused != "seed":  # (seeded when it calls upstream: charge())
        usage.upstream_refusal = _refusal(key, model, check, verdict, [], upstream=True)
    return usage


@dataclass(slots=True)
class _View:
    at: float  # monotonic, when Redis gave `verdict`
    verdict: Verdict
    overrun_base: tuple[float, ...]  # _Views.overruns of its buckets then
    taken: int = 0  # requests this process admitted on it since
    tokens: float = 0.0  # and the tokens they reserved


class _Views:
    """What Redis last said of each set of limits, and what this process took since: a
    request far from every limit (FAR_SHARE of each left, FAR_REQUESTS requests and
    slots at least, and a view at most VIEW_MAX_AGE_S old) is admitted at once, while
    Redis takes its part; near a limit every request waits for Redis."""

    FAR_SHARE, FAR_REQUESTS, VIEW_MAX_AGE_S, MAX_VIEWS = 0.2, 5, 1.0, 10_000

    def __init__(self) -> None:
        self._views: dict[tuple[str, ...], _View] = {}
        # Per token bucket, the tokens this process's requests used beyond their estimates
        # (a running total: a view subtracts what was added since it was taken).
        self._overruns: dict[str, float] = {}

    def overrun_base(self, check: Check) -> tuple[float, ...]:
        return tuple(self._overruns.get(b.key, 0.0) for b in check.buckets)

    def overran(self, bucket_key: str, tokens: float) -> None:
        self._overruns[bucket_key] = self._overruns.get(bucket_key, 0.0) + tokens

    def saw(
        self,
        check: Check,
        verdict: Verdict,
        *,
        unseen: tuple[int, float] = (0, 0.0),
        base: tuple[float, ...] | None = None,
    ) -> None:
        """Redis's verdict on `check`; `unseen`: the requests and tokens this process took
        of the same limits that the verdict does not count yet; `base`: the overruns when
        `check` was sent (those after are not in the verdict; default: now)."""
        if len(self._views) >= self.MAX_VIEWS:
            self._views.clear()
        self._views[_shape(check)] = _View(
            time.monotonic(),
            verdict,
            self.overrun_base(check) if base is None else base,
            taken=unseen[0],
            tokens=unseen[1],
        )

    def far_from_limits(self, check: Check) -> Verdict | None:
        """The view projected past this request when it is far from every limit (and
        counted as taken), else None."""
        view = self._views.get(_shape(check))
        if view is None or not shared.available:
            return None
        verdict = view.verdict
        if (
            time.monotonic() - view.at > self.VIEW_MAX_AGE_S
            or verdict.refused
            or verdict.upstream_refused not in ("", "seed")
        ):
            return None
        states = []
        for b, (remaining, reset_ms), base in zip(
            check.buckets, verdict.buckets, view.overrun_base, strict=True
        ):
            if b.upstream:
                left = remaining - view.tokens - b.cost - (self._overruns.get(b.key, 0.0) - base)
            else:
                left = remaining - view.taken - b.cost
            if left < max(self.FAR_SHARE * b.limit, 0 if b.upstream else self.FAR_REQUESTS):
                return None
            states.append((int(left), reset_ms))
        for (_, limit), held in zip(check.slots, verdict.slots_held, strict=True):
            if limit - held - view.taken - 1 < max(self.FAR_SHARE * limit, self.FAR_REQUESTS):
                return None
        if check.budget is not None and verdict.spend > (1 - self.FAR_SHARE) * check.budget:
            return None
        view.taken += 1
        view.tokens += _upstream_cost(check)
        return Verdict(
            "", 0.0, verdict.upstream_refused, 0.0, tuple(states), verdict.spend,
            verdict.slots_held,
        )  # fmt: skip


def _shape(check: Check) -> tuple[str, ...]:
    return (*(b.key for b in check.buckets), *(key for key, _ in check.slots), check.spend_key)


def _upstream_cost(check: Check) -> float:
    """The tokens `check` reserves (its upstream buckets all take the same estimate)."""
    return max((b.cost for b in check.buckets if b.upstream), default=0.0)


views = _Views()


def _admitted_on_view(
    key: KeyConfig, model: str, check: Check, projected: Verdict,
    request_buckets: tuple[Bucket, ...], token_buckets: tuple[Bucket, ...],
) -> Usage:  # fmt: skip
    """A request admitted far from its limits: Redis takes its part at once, and that
    verdict renews the view. While the budget's spend counter is not seeded, only the
    request part is taken: a hit needs no more, a miss is charged (and the counter
    seeded) before it calls upstream."""
    usage = Usage(
        key, model, check.member, slots=tuple(k for k, _ in check.slots), slots_shared=True
    )
    if projected.upstream_refused == "seed":
        shared.take(Check(request_buckets, check.slots, check.member, check.lease_ms))
    else:
        shared.take(check)
        usage.charged, usage.charge_shared = True, True
        usage.token_buckets, usage.spend_key = token_buckets, check.spend_key
    usage.headers = _headers(
        request_buckets, projected.buckets[: len(request_buckets)],
        token_buckets, projected.buckets[len(request_buckets) :],
    )  # fmt: skip
    return usage


async def charge(
    usage: Usage | None, key: KeyConfig, model: str, chat: ChatRequest, member: str,
    now: datetime | None = None,
) -> Usage | None:  # fmt: skip
    """Before calling upstream: the upstream part of the limits (tokens, the budget), as
    admitted, else checked now (async jobs, warming; a spend counter to seed first).
    GatewayError 429 when over; returns the usage to settle (None: no limits)."""
    limits = key.limits
    if limits is None:
        return usage
    if usage is not None and usage.upstream_refusal is not None:
        raise usage.upstream_refusal
    if usage is not None and usage.charged:
        return usage
    usage = usage or Usage(key, model, member)
    buckets = _token_buckets(key, model, limits, estimate_tokens(chat))
    spend_key, ttl_s = _spend_key(key, limits, now)
    check = Check(buckets, spend_key=spend_key, budget=limits.budget_usd)
    verdict, is_shared = await _decide(check)
    if verdict.upstream_refused == "seed":
        spend = await _period_spend(key, limits, now or timezone.now())
        if spend is not None:
            await (shared.seed if is_shared else _local_seed)(spend_key, spend, ttl_s)
            verdict, is_shared = await _decide(check)
        if spend is None or verdict.upstream_refused == "seed":  # unknown spend: not held back
            verdict, is_shared = await _decide(Check(buckets))
    if verdict.upstream_refused:
        # (its x-ratelimit headers went with the admission's)
        raise _refusal(key, model, check, verdict, [], upstream=True, now=now)
    usage.charged, usage.charge_shared = True, is_shared
    usage.token_buckets, usage.spend_key = buckets, spend_key
    return usage


def settle(usage: Usage | None, tokens: int, cost_usd: float) -> None:
    """The request ended having used `tokens` and cost `cost_usd`: release its slot,
    correct its token reservation, add its cost to the spend, where each was taken (Redis
    or this process), without waiting for Redis."""
    if usage is None or usage.settled:
        return
    usage.settled = True
    for b in usage.token_buckets:
        if tokens > b.cost:
            views.overran(b.key, tokens - b.cost)
    slots = usage.slots if usage.slots_shared else ()
    buckets, spend_key = (usage.token_buckets, usage.spend_key) if usage.charge_shared else ((), "")
    if not (usage.slots_shared and usage.charge_shared):
        local.settle(
            usage.member,
            () if usage.slots_shared else usage.slots,
            () if usage.charge_shared else usage.token_buckets,
            tokens,
            "" if usage.charge_shared else usage.spend_key,
            cost_usd,
        )
    if slots or buckets or spend_key:
        keys = [*slots, *(b.key for b in buckets), *([spend_key] if spend_key else [])]
        args: list[Any] = [len(slots), len(buckets), usage.member, cost_usd]
        for b in buckets:
            args += [b.limit, b.cost - tokens]
        shared.settle(keys, args)


def estimate_tokens(chat: ChatRequest) -> int:
    """Tokens a request may use, before the upstream says: its messages at 4 characters
    a token, plus the completion it allows (max_tokens, per choice)."""
    messages = chat.body.get("messages") or []
    characters = sum(len(str(message.get("content") or "")) for message in messages) + 8 * len(
        messages
    )
    completion = chat.body.get("max_completion_tokens") or chat.body.get("max_tokens") or 0
    return math.ceil(characters / 4) + int(completion) * int(chat.body.get("n") or 1)


async def close() -> None:
    """Before an event loop ends (workers run each job in one of its own)."""
    await shared.close()


# --- helpers ----------------------------------------------------------------------------


def _key(key: KeyConfig, model: str, name: str) -> str:
    return _key_name(key.id, key.key_hash_prefix, model, name)


@functools.lru_cache(maxsize=16384)
def _key_name(key_id: int, hash_prefix: str, model: str, name: str) -> str:
    scope = f"m:{model}:" if model else ""
    return f"{PREFIX}{key_id}:{hash_prefix}:{scope}{name}"


def _token_buckets(
    key: KeyConfig, model: str, limits: KeyLimits, cost: float
) -> tuple[Bucket, ...]:
    rates: list[tuple[str, RateLimits]] = [("", limits.rates), (model, limits.for_model(model))]
    return tuple(
        Bucket(_key(key, scope, "tpm"), rate.tpm, cost, upstream=True)
        for scope, rate in rates
        if rate.tpm
    )


def _spend_key(key: KeyConfig, limits: KeyLimits, now: datetime | None) -> tuple[str, float]:
    """The spend counter of the key's budget period holding `now` (None: now), and how
    long it is kept."""
    moment = time.time() if now is None else now.timestamp()
    name, end = _period_counter(
        key.id, key.key_hash_prefix, limits.budget_period, int(moment // 86400)
    )
    return name, (end - moment + 3600 if end is not None else TOTAL_SPEND_TTL_S)


@functools.lru_cache(maxsize=16384)
def _period_counter(
    key_id: int, hash_prefix: str, period: str, day: int
) -> tuple[str, float | None]:
    """Periods start at a UTC midnight: the counter's name and end depend on the day only."""
    start, end = period_bounds(period, datetime.fromtimestamp(day * 86400, UTC))
    name = f"{PREFIX}{key_id}:{hash_prefix}:spend:{period}:{start.date()}"
    return name, end.timestamp() if end is not None else None


async def _decide(check: Check) -> tuple[Verdict, bool]:
    """The verdict, and whether Redis gave it (else this process did)."""
    if settings.REDIS_URL:
        verdict = await shared.check(check)
        if verdict is not None:
            return verdict, True
        if settings.RATE_LIMITS_WITHOUT_REDIS == "closed":
            raise GatewayError(
                "limits_unavailable",
                "The rate limiter is unavailable (Redis is down), and this gateway refuses "
                "limited keys' requests until it is back.",
            )
    return local.check(check), False


async def _local_seed(spend_key: str, spend: float, ttl_s: float) -> None:
    local.seed(spend_key, spend, ttl_s)


async def _period_spend(key: KeyConfig, limits: KeyLimits, now: datetime) -> float | None:
    """What the key spent this period, from KeySpend; None when the database is away."""
    return await cache_service.in_io_thread(
        lambda: layers.db(
            lambda: spend.period_spend(key.id, limits, now), wait_s=settings.API_DATABASE_WAIT_S
        )
    )


def _headers(
    request_buckets: tuple[Bucket, ...],
    request_state: tuple[tuple[int, float], ...],
    token_buckets: tuple[Bucket, ...],
    token_state: tuple[tuple[int, float], ...],
) -> Headers:
    """OpenAI's x-ratelimit-* headers, for the tighter of the key's and the model's."""
    headers: Headers = []
    for name, buckets, states in (
        ("requests", request_buckets, request_state),
        ("tokens", token_buckets, token_state),
    ):
        if not buckets:
            continue
        bucket, (remaining, reset_ms) = min(
            zip(buckets, states, strict=True), key=lambda p: p[1][0]
        )
        headers += [
            (f"x-ratelimit-limit-{name}".encode(), str(bucket.limit).encode()),
            (f"x-ratelimit-remaining-{name}".encode(), str(max(0, remaining)).encode()),
            (f"x-ratelimit-reset-{name}".encode(), duration(reset_ms).encode()),
        ]
    return headers


def duration(ms: float) -> str:
    """As OpenAI writes reset times: 20ms, 1s, 6m0s."""
    if ms < 1000:
        return f"{max(0, round(ms))}ms"
    seconds = round(ms / 1000, 1)
    minutes, seconds = divmod(seconds, 60)
    return f"{int(minutes)}m{seconds:g}s" if minutes else f"{seconds:g}s"


def _refusal(
    key: KeyConfig, model: str, check: Check, verdict: Verdict, headers: Headers, *,
    upstream: bool, now: datetime | None = None,
) -> GatewayError:  # fmt: skip
    """The error for the refused part of `verdict` (`upstream`: the upstream part)."""
    who = f"service key '{key.name}'"
    refused, retry_ms = (
        (verdict.upstream_refused, verdict.upstream_retry_ms)
        if upstream
        else (verdict.refused, verdict.retry_ms)
    )
    kind, _, index = refused.partition(":")
    if kind == "budget":
        limits = key.limits
        assert limits is not None and limits.budget_usd is not None
        _, resets = period_bounds(limits.budget_period, now or timezone.now())
        when = (
            f"It resets at {resets.isoformat().replace('+00:00', 'Z')}."
            if resets
            else ("It is a total budget: it does not reset.")
        )
        return GatewayError(
            "insufficient_quota",
            f"The {who} has used its {limits.budget_period} budget: ${verdict.spend:,.6g} "
            f"spent of ${limits.budget_usd:,.6g}. {when}",
            headers=headers,
        )
    retry_s = max(retry_ms, 1.0) / 1000
    if kind == "slot":
        _, limit = check.slots[int(index) - 1]
        return GatewayError(
            "rate_limit_exceeded",
            f"Too many concurrent requests for {who}: Limit {limit} at once. "
            "Please try again when one of them has finished.",
            retry_after_s=retry_s, error_type="requests", headers=headers,
        )  # fmt: skip
    bucket = check.buckets[int(index) - 1]
    scope = f" for model '{model}'" if ":m:" in bucket.key else ""
    what = "tokens per min (TPM)" if bucket.key.endswith("tpm") else "requests per min (RPM)"
    if bucket.cost > bucket.limit:
        return GatewayError(
            "rate_limit_exceeded",
            f"Request too large for {who}{scope} on {what}: Limit {bucket.limit}, Requested "
            f"{bucket.cost:g}. Send fewer tokens (shorter messages, a lower max_tokens).",
            error_type="tokens", headers=headers,
        )  # fmt: skip
    return GatewayError(
        "rate_limit_exceeded",
        f"Rate limit reached for {who}{scope} on {what}: Limit {bucket.limit}"
        + (f", Requested {bucket.cost:g}" if what.startswith("tokens") else "")
        + f". Please try again in {duration(retry_ms)}.",
        retry_after_s=retry_s,
        error_type="tokens" if what.startswith("tokens") else "requests",
        headers=headers,
    )


async def key_info(key: KeyConfig, now: datetime | None = None) -> dict[str, Any]:
    """What GET /v1/key/info tells a key about itself: limits, what is left, its spend."""
    now = now or timezone.now()
    limits = key.limits or KeyLimits()
    info: dict[str, Any] = {
        "object": "beastmode.key",
        "name": key.name,
        "limits": {
            "rpm": limits.rates.rpm,
            "tpm": limits.rates.tpm,
            "max_parallel": limits.rates.max_parallel,
            "models": {
                model: {"rpm": rates.rpm, "tpm": rates.tpm, "max_parallel": rates.max_parallel}
                for model, rates in sorted(limits.per_model.items())
            },
        },
        "rate_limits": {},
        "budget": None,
    }
    peeks = [
        (name, Bucket(_key(key, "", name), limit, 0))
        for name, limit in (("rpm", limits.rates.rpm), ("tpm", limits.rates.tpm))
        if limit
    ]
    spend_key, _ = _spend_key(key, limits, now)
    check = Check(
        tuple(bucket for _, bucket in peeks),
        spend_key=spend_key,
        budget=None if limits.budget_usd is None else _NO_BUDGET,
    )
    verdict, _ = await _decide(check)
    for (name, bucket), (remaining, reset_ms) in zip(peeks, verdict.buckets, strict=True):
        info["rate_limits"]["requests" if name == "rpm" else "tokens"] = {
            "limit": bucket.limit, "remaining": max(0, remaining), "reset": duration(reset_ms)
        }  # fmt: skip
    if limits.budget_usd is not None:
        spent: float | None = verdict.spend
        if verdict.upstream_refused == "seed":
            spent = await _period_spend(key, limits, now)  # None: the database is away
        start, resets = period_bounds(limits.budget_period, now)
        info["budget"] = {
            "usd": limits.budget_usd,
            "period": limits.budget_period,
            "spent_usd": None if spent is None else round(spent, 9),
            "remaining_usd": None
            if spent is None
            else round(max(0.0, limits.budget_usd - spent), 9),
            "period_start": start.isoformat().replace("+00:00", "Z"),
            "resets_at": resets.isoformat().replace("+00:00", "Z") if resets else None,
        }
    return info


_NO_BUDGET = 1e300  # a budget no spend reaches: the check only reads the spend
