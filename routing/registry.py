"""Keys, routes and endpoints held in process, so the hot path never queries the database.

`current()` returns an immutable snapshot. A daemon thread polls RegistryVersion (one small
query every REGISTRY_REFRESH_S) and, when an admin changed something, swaps in a snapshot
brought up to date: routes and endpoints (tens to hundreds) read whole, service keys
(up to hundreds of thousands) only those the key log names (ServiceKeyChange), so a
revoked or deleted key stops working everywhere within about REGISTRY_REFRESH_S. A
process too far behind, or one that finds the log emptied, reads everything again.
"""

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

from django.conf import settings
from django.db import close_old_connections
from django.db.models import QuerySet
from django.utils import timezone

from beastmode.lib import changes
from beastmode.lib.errors import GatewayError
from cache import keys as cache_keys
from cache.policy import CachePolicy
from routing import circuits
from routing.key_limits import KeyLimits, key_limits
from routing.models import (
    KEY_LOG_MAX_KEYS,
    ModelEndpoint,
    RegistryVersion,
    Route,
    ServiceKey,
    ServiceKeyChange,
)
from routing.service_keys import hash_key
from routing.upstreams import Upstream

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EndpointConfig:
    id: int
    name: str
    provider: str
    base_url: str
    upstream_model: str
    api_key: str = field(repr=False)
    connect_timeout_s: float
    first_byte_timeout_s: float
    total_timeout_s: float
    max_retries: int
    input_cost_per_1m: float
    output_cost_per_1m: float

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).netloc

    @property
    def label(self) -> str:
        """How errors name the endpoint: name and host, never the key."""
        return f"'{self.name}' ({self.host})"

    def cost_usd(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.input_cost_per_1m + tokens_out * self.output_cost_per_1m) / 1e6


@dataclass(frozen=True)
class RouteConfig:
    model_name: str
    endpoints: tuple[EndpointConfig, ...]
    cache_enabled: bool = True
    semantic_mode: str = "off"
    semantic_threshold: float = 0.95
    cache_ttl_s: int | None = None
    timeout_s: float | None = None  # the whole request's limit; None: the endpoints' sum

    @functools.cached_property
    def cache_policy(self) -> CachePolicy:
        return CachePolicy(
            enabled=self.cache_enabled,
            ttl_s=self.cache_ttl_s,
            semantic_mode=self.semantic_mode,
            threshold=self.semantic_threshold,
            upstream=self.upstream,
        )

    @functools.cached_property
    def upstream(self) -> str:
        """The primary upstream, part of every cache key (cache/keys.py): pointed to another
        one, the model never serves what the old one answered, in any process, whether or
        not it had reloaded the registry when the purge ran (routing/repointing.py)."""
        if not self.endpoints:
            return ""
        first = self.endpoints[0]
        return str(Upstream.of(first.provider, first.base_url, first.upstream_model))


@dataclass(frozen=True)
class KeyConfig:
    id: int
    name: str
    allowed_models: frozenset[str]
    expires_at: datetime | None
    revoked: bool
    cache_namespace_id: int | None = None  # a shared namespace's primary key; None = own
    key_hash_prefix: str = ""  # names the key's own cache namespace; unlike ids, never reused
    limits: KeyLimits | None = None  # None: not limited (the hot path checks nothing)

    def may_use(self, model_name: str) -> bool:
        return not self.allowed_models or model_name in self.allowed_models

    @property
    def cache_namespace(self) -> str:
        return cache_keys.namespace_for(
            key_hash_prefix=self.key_hash_prefix, shared_namespace_id=self.cache_namespace_id
        )

    def usable(self) -> bool:
        """Neither revoked nor expired: what warming may call with (it spends the key)."""
        return not self.revoked and (self.expires_at is None or self.expires_at > timezone.now())


@dataclass(frozen=True)
class Snapshot:
    version: int
    keys_by_hash: dict[str, KeyConfig]
    routes: dict[str, RouteConfig]
    endpoints: dict[int, EndpointConfig]
    key_hashes_by_id: dict[int, str] = field(default_factory=dict)
    keys_read: int = 0  # key rows read to build it from the one before: all, or the changed

    def authenticate(self, authorization: str | None) -> KeyConfig:
        """The key named by an `Authorization: Bearer` header, or GatewayError (401)."""
        if not authorization:
            raise GatewayError(
                "missing_api_key",
                "No API key provided: send 'Authorization: Bearer <service key>'.",
            )
        scheme, _, raw_key = authorization.partition(" ")
        raw_key = raw_key.strip()
        if scheme.lower() != "bearer" or not raw_key:
            raise GatewayError(
                "missing_api_key", "Malformed Authorization header: use 'Bearer <service key>'."
            )
        key = self.keys_by_hash.get(hash_key(raw_key))
        if key is None:
            raise GatewayError(
                "invalid_api_key", f"Incorrect API key provided ({_redact(raw_key)})."
            )
        if key.revoked:
            raise GatewayError("revoked_api_key", f"The service key '{key.name}' was revoked.")
        if key.expires_at is not None and key.expires_at <= timezone.now():
            raise GatewayError(
                "expired_api_key",
                f"The service key '{key.name}' expired at {key.expires_at.isoformat()}.",
            )
        return key

    def resolve(self, key: KeyConfig, model_name: str) -> RouteConfig:
        """The model's route; GatewayError 404 `model_not_found` alike for a model that
        does not exist and one this key may not use, so a key never learns which
        models exist beyond its own."""
        route = self.routes.get(model_name)
        if route is None or not key.may_use(model_name):
            raise GatewayError(
                "model_not_found",
                f"The model '{model_name[:200]}' does not exist or this key may not use it. "
                "GET /v1/models lists the models this key may use.",
                param="model",
            )
        return route

    def key_by_id(self, key_id: int) -> KeyConfig | None:
        """The key with this id, if it is usable."""
        key = self.keys_by_hash.get(self.key_hashes_by_id.get(key_id, ""))
        return key if key is not None and key.usable() else None

    def key_for_namespace(self, namespace: str, model: str) -> KeyConfig | None:
        """A usable key allowed ``model`` whose cache namespace this is now (as
        cache.keys.namespace_for names it), so what it answers is stored where the entry was."""
        for key in self.keys_by_hash.values():
            if key.usable() and key.may_use(model) and key.cache_namespace == namespace:
                return key
        return None

    def models_for(self, key: KeyConfig) -> list[str]:
        return sorted(name for name in self.routes if key.may_use(name))


def _redact(raw_key: str) -> str:
    return raw_key[:6] + "…" if len(raw_key) > 10 else "…"


def _endpoint_config(ep: ModelEndpoint) -> EndpointConfig:
    return EndpointConfig(
        id=ep.id,
        name=ep.name,
        provider=ep.provider,
        base_url=ep.base_url.rstrip("/"),
        upstream_model=ep.upstream_model,
        api_key=ep.get_api_key(),
        connect_timeout_s=ep.connect_timeout_s,
        first_byte_timeout_s=ep.first_byte_timeout_s,
        total_timeout_s=ep.total_timeout_s,
        max_retries=ep.max_retries,
        input_cost_per_1m=float(ep.input_cost_per_1m),
        output_cost_per_1m=float(ep.output_cost_per_1m),
    )


def load_endpoint_configs(endpoint_ids: list[int]) -> list[EndpointConfig]:
    return [_endpoint_config(ep) for ep in ModelEndpoint.objects.filter(id__in=endpoint_ids)]


def load_snapshot() -> Snapshot:
    """Read everything the hot path needs in a handful of queries.

    No transaction on purpose: the version is read first, so a change made while the
    rest is read moves the version again and the next poll applies it. (Holding read locks
    across tables here deadlocked against TRUNCATE in the tests.)"""
    version, _ = _read_version()
    routes, endpoints = _load_routes()
    keys_by_hash: dict[str, KeyConfig] = {}
    key_hashes_by_id: dict[int, str] = {}
    _put_keys(ServiceKey.objects.all(), keys_by_hash, key_hashes_by_id)
    return Snapshot(
        version, keys_by_hash, routes, endpoints, key_hashes_by_id, keys_read=len(keys_by_hash)
    )


def catch_up(snapshot: Snapshot) -> Snapshot:
    """`snapshot` brought up to the database's version: routes and endpoints read whole,
    and only the service keys changed since its version (one row each; a key gone from
    the table is dropped). Everything is read again when the snapshot is older than the
    key log, the version went back (the table was emptied), or more than
    KEY_LOG_MAX_KEYS keys changed. Returns `snapshot` itself when nothing moved."""
    version, log_since = _read_version()
    if version == snapshot.version:
        return snapshot
    if version < snapshot.version or snapshot.version < log_since:
        return load_snapshot()
    changed = ServiceKeyChange.objects.filter(version__gt=snapshot.version, version__lte=version)
    key_ids = set(changed.values_list("key_id", flat=True))
    # Read again: a prune that committed in between may have taken rows this one needed.
    if len(key_ids) > KEY_LOG_MAX_KEYS or snapshot.version < _read_version()[1]:
        return load_snapshot()
    routes, endpoints = _load_routes()
    keys_by_hash, key_hashes_by_id = snapshot.keys_by_hash, snapshot.key_hashes_by_id
    if key_ids:  # copied, not changed in place: other threads may be iterating the old ones
        keys_by_hash, key_hashes_by_id = dict(keys_by_hash), dict(key_hashes_by_id)
        for key_id in key_ids:
            old_hash = key_hashes_by_id.pop(key_id, None)
            if old_hash is not None:
                keys_by_hash.pop(old_hash, None)
        _put_keys(ServiceKey.objects.filter(id__in=key_ids), keys_by_hash, key_hashes_by_id)
    return Snapshot(
        version, keys_by_hash, routes, endpoints, key_hashes_by_id, keys_read=len(key_ids)
    )


def _load_routes() -> tuple[dict[str, RouteConfig], dict[int, EndpointConfig]]:
    endpoints = {ep.id: _endpoint_config(ep) for ep in ModelEndpoint.objects.filter(enabled=True)}
    routes = {}
    for route in Route.objects.filter(enabled=True).prefetch_related("chain"):
        chain = sorted(route.chain.all(), key=lambda link: link.position)
        routes[route.model_name] = RouteConfig(
            model_name=route.model_name,
            endpoints=tuple(
                endpoints[link.endpoint_id] for link in chain if link.endpoint_id in endpoints
            ),
            cache_enabled=route.cache_enabled,
            semantic_mode=route.semantic_mode,
            semantic_threshold=route.semantic_threshold,
            cache_ttl_s=route.cache_ttl_s,
            timeout_s=route.timeout_s,
        )
    return routes, endpoints


def _put_keys(
    rows: QuerySet[ServiceKey],
    keys_by_hash: dict[str, KeyConfig],
    key_hashes_by_id: dict[int, str],
) -> None:
    # Plain tuples of the fields used: model instances cost half a full reload at 100k keys.
    fields = rows.values_list(
        "id", "key_hash", "name", "allowed_models", "expires_at", "revoked_at",
        "cache_namespace_id", *_LIMIT_FIELDS,
    )  # fmt: skip
    for (
        key_id,
        key_hash,
        name,
        allowed_models,
        expires_at,
        revoked_at,
        namespace_id,
        *limits,
    ) in fields:
        keys_by_hash[key_hash] = KeyConfig(
            id=key_id,
            name=name,
            allowed_models=frozenset(allowed_models or ()),
            expires_at=expires_at,
            revoked=revoked_at is not None,
            cache_namespace_id=namespace_id,
            key_hash_prefix=key_hash[: cache_keys.OWN_NAMESPACE_HASH_CHARS],
            limits=key_limits(**dict(zip(_LIMIT_FIELDS, limits, strict=True))),
        )
        key_hashes_by_id[key_id] = key_hash


def _read_version() -> tuple[int, int]:
    """The registry version and the version since which the key log is complete."""
    row = RegistryVersion.objects.filter(pk=1).values_list("version", "log_since").first()
    return row or (0, 0)


def bump_version(*, key_ids: Collection[int] = ()) -> None:
    """Tell every process to catch up (called on every config change); `key_ids` are the
    service keys that changed, which they read again."""
    RegistryVersion.objects.bump(key_ids=key_ids)


_LIMIT_FIELDS = ("rpm", "tpm", "max_parallel", "budget_usd", "budget_period", "model_limits")
_snapshot: Snapshot | None = None
_lock = threading.Lock()
_reload_lock = threading.Lock()  # one catch-up at a time (refresher, jobs, warming)
_refresher: threading.Thread | None = None


def current() -> Snapshot:
    """The snapshot; loaded now if this process has none yet, except on an event loop,
    which must not wait for the database: there a request gets a 503 until the
    refresher has loaded it."""
    snapshot = _snapshot
    if snapshot is None:
        if _on_event_loop():
            raise GatewayError("config_unavailable", "The configuration is not loaded yet.")
        return reload()
    return snapshot


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def uses_semantic_matching() -> bool:
    """Whether any model matches semantically (on or in shadow)."""
    return any(route.semantic_mode != "off" for route in current().routes.values())


def reload() -> Snapshot:
    """Bring this process up to the database's registry now (see `catch_up`); returns the
    snapshot. When the version moved, `changes.reloaded` is sent so other apps catch up
    too (the cache applies purges)."""
    global _snapshot
    with _reload_lock:
        previous = _snapshot
        snapshot = load_snapshot() if previous is None else catch_up(previous)
        with _lock:
            _snapshot = snapshot
    if previous is None or snapshot.version != previous.version:
        changes.reloaded.send(sender=Snapshot)
    return snapshot


def start_refresher() -> None:
    """Start the polling thread once per process (idempotent)."""
    global _refresher
    with _lock:
        if _refresher is not None:
            return
        _refresher = threading.Thread(target=_refresh_forever, name="registry-refresh", daemon=True)
        _refresher.start()
    circuits.start(lambda: _snapshot.endpoints if _snapshot is not None else {})


def _refresh_forever() -> None:
    interval_s = settings.REGISTRY_REFRESH_S
    while True:
        time.sleep(interval_s)
        try:
            close_old_connections()
            previous = _snapshot
            started_s = time.perf_counter()
            snapshot = reload()
            if snapshot is not previous:  # bench/cluster_registry.py reads this line
                elapsed_ms = (time.perf_counter() - started_s) * 1000
                log.info("registry reloaded (version %s): %s key rows read in %.1f ms",
                         snapshot.version, snapshot.keys_read, elapsed_ms)  # fmt: skip
        except Exception:
            # The database may be restarting; keep serving the last good snapshot.
            log.warning("registry refresh failed; keeping the previous snapshot", exc_info=True)
