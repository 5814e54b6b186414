"""Declarative model configuration from YAML: `manage.py import_models FILE.yaml`.

Idempotent: endpoints are matched by name and routes by model name; importing the
same file twice changes nothing. API keys come from the environment variable the
file names (`api_key_env`), never from the file itself. The import is one transaction: a
bad value anywhere is reported (naming the model, endpoint and field) and changes nothing.
Models the import points to another upstream have their cache purged once it is
committed (routing/repointing.py).
"""

import os
from dataclasses import dataclass, field
from typing import Any

import yaml
from django.core.exceptions import ValidationError
from django.db import DatabaseError

from cache import controls
from cache.semantic import similarity, switch
from routing import import_values, repointing
from routing.import_values import ImportError_
from routing.models import ModelEndpoint, Route, RouteEndpoint, ServiceKey
from routing.service_keys import assign_new_key

_ENDPOINT_FIELDS = {
    "name", "provider", "base_url", "model", "api_key_env", "timeout_s", "connect_timeout_s",
    "first_byte_timeout_s", "total_timeout_s", "max_retries", "input_cost_per_1m",
    "output_cost_per_1m", "enabled",
}  # fmt: skip
_MODEL_FIELDS = {"name", "endpoints", "description", "enabled", "cache", "timeout_s"}
_KEY_FIELDS = {
    "name", "models", "rpm", "tpm", "max_parallel", "budget_usd", "budget_period", "model_limits",
}  # fmt: skip
# What ModelEndpoint's columns (and so admin) hold.
_COST_MAX_DIGITS, _COST_DECIMAL_PLACES = 12, 6
_MAX_RETRIES = 32767


@dataclass
class ImportSummary:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    purged: list[repointing.Repoint] = field(default_factory=list)  # models repointed
    new_keys: dict[str, str] = field(default_factory=dict)  # name: raw key, shown once
    # Where each name was defined first: a second definition must be the same.
    _defined: dict[str, tuple[str, Any]] = field(default_factory=dict, repr=False)


def import_models(text: str) -> ImportSummary:
    """Raises ImportError_ naming the first bad value; then nothing was changed."""
    try:
        data = yaml.safe_load(text)  # never yaml.load: the file may come from anyone
    except yaml.YAMLError as exc:
        raise ImportError_(f"not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not (set(data) & {"models", "keys"}):
        raise ImportError_("the file must have a top-level 'models:' list, 'keys:' or both")
    _reject_unknown(data, {"models", "keys"}, "the file")
    models, keys = data.get("models") or [], data.get("keys") or []
    for name, value in (("models", models), ("keys", keys)):
        if not isinstance(value, list):
            raise ImportError_(f"the file must have a top-level '{name}:' list")
    summary = ImportSummary()
    # One transaction: a bad value anywhere leaves the database as it was.
    with repointing.purging_repointed_models() as repoints:
        for index, spec in enumerate(models):
            _import_model(spec, f"models[{index}]", summary)
        for index, spec in enumerate(keys):
            _import_key(spec, f"keys[{index}]", summary)
    summary.purged = repoints
    return summary


def _import_key(spec: Any, where: str, summary: ImportSummary) -> None:
    """A service key's allow-list and limits, matched by name among the keys not revoked;
    a name no key has creates a key, whose secret is shown once."""
    if not isinstance(spec, dict):
        raise ImportError_(f"{where}: must be a mapping with a 'name'")
    _require(spec, "name", where, "the service key's name")
    name = import_values.text(spec["name"], f"{where}.name", max_length=100, what="a key name")
    where = f"{where} ({name})"
    _define_once(summary, f"key {name}", spec, where, again=False)
    _reject_unknown(spec, _KEY_FIELDS, where)
    models = spec.get("models") or []
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise ImportError_(f"{where}.models: must be a list of model names")
    wanted = {
        "allowed_models": models,
        "budget_period": spec.get("budget_period") or "monthly",
        "model_limits": spec.get("model_limits") or {},
        **{name: spec.get(name) for name in ("rpm", "tpm", "max_parallel")},
        # As written: a float's binary value has more decimal places than the column.
        "budget_usd": None if spec.get("budget_usd") is None else str(spec["budget_usd"]),
    }
    matches = list(ServiceKey.objects.filter(name=name, revoked_at=None)[:2])
    if len(matches) > 1:
        raise ImportError_(f"{where}: several keys not revoked are named {name!r}; rename them")
    key = matches[0] if matches else ServiceKey(name=name)
    before = {field: getattr(key, field) for field in wanted}
    _apply(key, wanted)
    try:
        key.full_clean(exclude=["prefix", "key_hash", "cache_namespace"])
    except ValidationError as exc:
        problems = "; ".join(f"{f}: {' '.join(e)}" for f, e in exc.message_dict.items())
        raise ImportError_(f"{where}: {problems}") from None
    changed = {field: getattr(key, field) for field in wanted} != before
    if not matches:
        summary.new_keys[name] = assign_new_key(key)
    if changed or not matches:
        key.save()
    _tally(summary, f"key {name}", not matches, changed)


def _import_model(spec: Any, where: str, summary: ImportSummary) -> None:
    if not isinstance(spec, dict):
        raise ImportError_(f"{where}: must be a mapping with a 'name' and 'endpoints'")
    name = _model_name(spec, where)
    where = f"{where} ({name})"
    _define_once(summary, f"model {name}", spec, where, again=False)
    _reject_unknown(spec, _MODEL_FIELDS, where)
    endpoints = spec.get("endpoints")
    if not isinstance(endpoints, list) or not endpoints:
        raise ImportError_(f"{where}: needs a non-empty 'endpoints' list")
    chain = [
        _import_endpoint(ep, f"{where}.endpoints[{i}]", summary) for i, ep in enumerate(endpoints)
    ]
    if len({ep.name for ep in chain}) < len(chain):
        raise ImportError_(f"{where}.endpoints: lists an endpoint twice")
    try:
        _save_route(name, spec, chain, where, summary)
    except DatabaseError as exc:  # what the checks above did not foresee still names its model
        raise ImportError_(f"{where}: the database refused it: {exc}") from None


def _model_name(spec: dict[str, Any], where: str) -> str:
    _require(spec, "name", where, "the model name clients send")
    return import_values.text(
        spec["name"], f"{where}.name", max_length=200, what="the model name clients send"
    )


def _save_route(
    name: str, spec: dict[str, Any], chain: list[ModelEndpoint], where: str, summary: ImportSummary
) -> None:
    route, created = Route.objects.get_or_create(model_name=name)
    wanted = {
        "description": import_values.optional_text(
            spec.get("description"), f"{where}.description", max_length=300
        ),
        "enabled": _flag(spec, "enabled", where),
        "timeout_s": (
            None
            if spec.get("timeout_s") is None
            else import_values.seconds(spec["timeout_s"], f"{where}.timeout_s")
        ),
        **_cache_fields(spec.get("cache"), f"{where}.cache"),
    }
    if not created:  # a new model has no answers stored yet
        switch.mode_changed(name, was=route.semantic_mode, now=wanted["semantic_mode"])
    changed = _apply(route, wanted)
    current = list(route.chain.order_by("position").values_list("endpoint_id", flat=True))
    if current != [ep.id for ep in chain]:
        route.chain.all().delete()
        RouteEndpoint.objects.bulk_create(
            RouteEndpoint(route=route, endpoint=ep, position=pos) for pos, ep in enumerate(chain)
        )
        changed = True
    if changed:
        route.save()  # moves the registry version even when only the chain changed
    _tally(summary, f"model {route.model_name}", created, changed)


def _cache_fields(spec: Any, where: str) -> dict[str, Any]:
    """`cache: {enabled: true, semantic: "on", threshold: 0.95, ttl_s: 3600}`"""
    spec = {} if spec is None else spec
    if not isinstance(spec, dict):
        raise ImportError_(f"{where}: must be a mapping")
    _reject_unknown(spec, {"enabled", "semantic", "threshold", "ttl_s"}, where)
    semantic = spec.get("semantic", "off")
    if isinstance(semantic, bool):  # YAML 1.1 reads a bare on/off as a boolean
        semantic = "on" if semantic else "off"
    semantic = str(semantic).lower()
    if semantic not in Route.SemanticMode.values:
        raise ImportError_(f"{where}.semantic: one of off, shadow, on")
    return {
        "cache_enabled": _flag(spec, "enabled", where),
        "semantic_mode": semantic,
        "semantic_threshold": _threshold(spec.get("threshold"), f"{where}.threshold"),
        "cache_ttl_s": _ttl_s(spec.get("ttl_s"), f"{where}.ttl_s"),
    }


def _flag(spec: dict[str, Any], name: str, where: str) -> bool:
    # Not bool(): the string "false" is true.
    value = spec.get(name, True)
    if not isinstance(value, bool):
        raise ImportError_(f"{where}.{name}: true or false; got {value!r}")
    return value


def _threshold(value: Any, where: str) -> float:
    """The same range admin accepts (the Route field's validators)."""
    if value is None:
        return similarity.DEFAULT_THRESHOLD
    low, high = similarity.MIN_THRESHOLD, similarity.MAX_THRESHOLD
    if (
        isinstance(value, bool)  # YAML reads yes/true as a boolean, and True == 1.0
        or not isinstance(value, (int, float))
        or not low <= value <= high  # (also refuses nan)
    ):
        raise ImportError_(
            f"{where}: a similarity from {low} to {high} "
            f"(default {similarity.DEFAULT_THRESHOLD}); got {value!r}"
        )
    return float(value)


def _ttl_s(value: Any, where: str) -> int | None:
    """Whole seconds, as admin accepts them; empty keeps the defaults."""
    if value is None:
        return None
    seconds = controls.whole_seconds(value) if not isinstance(value, str) else None
    if seconds is None or not 1 <= seconds <= controls.MAX_TTL_S:
        raise ImportError_(
            f"{where}: a whole number of seconds from 1 to {controls.MAX_TTL_S} (a year), "
            f"or leave it out for the defaults; got {value!r}"
        )
    return seconds


def _import_endpoint(spec: Any, where: str, summary: ImportSummary) -> ModelEndpoint:
    if not isinstance(spec, dict):
        raise ImportError_(f"{where}: must be a mapping")
    _require(spec, "name", where, "a unique endpoint name")
    name = import_values.slug(spec["name"], f"{where}.name", max_length=100)
    where = f"{where} ({name})"
    # Models may share an endpoint, each spelling it out.
    _define_once(summary, f"endpoint {name}", spec, where, again=True)
    _reject_unknown(spec, _ENDPOINT_FIELDS, where)
    wanted = _endpoint_fields(spec, where)
    api_key = _api_key(spec, where)
    endpoint = ModelEndpoint.objects.filter(name=name).first()
    created = endpoint is None
    if endpoint is None:
        endpoint = ModelEndpoint(name=name)
    changed = _apply(endpoint, wanted)
    if api_key is not None and (created or endpoint.get_api_key() != api_key):
        endpoint.set_api_key(api_key)
        changed = True
    if created or changed:
        try:
            endpoint.save()
        except DatabaseError as exc:
            raise ImportError_(f"{where}: the database refused it: {exc}") from None
    _tally(summary, f"endpoint {endpoint.name}", created, changed)
    return endpoint


def _endpoint_fields(spec: dict[str, Any], where: str) -> dict[str, Any]:
    _require(spec, "base_url", where, "the upstream's base URL, like https://api.openai.com/v1")
    _require(spec, "model", where, "the model id sent upstream")
    provider = spec.get("provider", "openai")
    if provider not in ModelEndpoint.Provider.values:
        raise ImportError_(
            f"{where}.provider: unknown provider {provider!r}; one of "
            f"{', '.join(ModelEndpoint.Provider.values)}"
        )
    timeout_s = import_values.seconds(spec.get("timeout_s", 120), f"{where}.timeout_s")
    defaults = {
        "connect_timeout_s": min(5.0, timeout_s),
        "first_byte_timeout_s": timeout_s,
        "total_timeout_s": timeout_s,
    }
    costs = {
        name: import_values.usd(
            spec.get(name, 0), f"{where}.{name}",
            max_digits=_COST_MAX_DIGITS, decimal_places=_COST_DECIMAL_PLACES,
        )
        for name in ("input_cost_per_1m", "output_cost_per_1m")
    }  # fmt: skip
    return {
        "provider": provider,
        "base_url": import_values.url(spec["base_url"], f"{where}.base_url", max_length=500),
        "upstream_model": import_values.text(
            spec["model"], f"{where}.model", max_length=200, what="the model id sent upstream"
        ),
        **{
            name: import_values.seconds(spec.get(name, default), f"{where}.{name}")
            for name, default in defaults.items()
        },
        "max_retries": import_values.whole_number(
            spec.get("max_retries", 2), f"{where}.max_retries", high=_MAX_RETRIES
        ),
        **costs,
        "enabled": _flag(spec, "enabled", where),
    }


def _api_key(spec: dict[str, Any], where: str) -> str | None:
    """The key from the environment variable the file names; None when it names none."""
    if spec.get("api_key_env") is None:
        return None
    env_name = import_values.text(
        spec["api_key_env"], f"{where}.api_key_env", max_length=200,
        what="the name of the environment variable holding the API key",
    )  # fmt: skip
    api_key = os.environ.get(env_name)
    if api_key is None:
        raise ImportError_(f"{where}.api_key_env: environment variable {env_name} is not set")
    return api_key


def _require(spec: dict[str, Any], name: str, where: str, what: str) -> None:
    if spec.get(name) is None:
        raise ImportError_(f"{where}: '{name}' is required ({what})")


def _define_once(
    summary: ImportSummary, label: str, spec: dict[str, Any], where: str, *, again: bool
) -> None:
    """Refuse a second definition of a name (`again`: unless it is the same): the second
    would silently replace the first."""
    first_where, first_spec = summary._defined.setdefault(label, (where, spec))
    if first_where != where and not (again and first_spec == spec):
        raise ImportError_(
            f"{where}: {label} is defined {'differently ' if again else ''}at {first_where} "
            f"already; define it once{', or the same way each time' if again else ''}"
        )


def _apply(instance: Any, wanted: dict[str, Any]) -> bool:
    changed = False
    for name, value in wanted.items():
        if getattr(instance, name) != value:
            setattr(instance, name, value)
            changed = True
    return changed


def _reject_unknown(spec: dict[str, Any], known: set[str], where: str) -> None:
    if unknown := sorted(set(spec) - known):
        if "api_key" in unknown:
            raise ImportError_(
                f"{where}: put the key in the environment and name it in api_key_env"
            )
        raise ImportError_(f"{where}: unknown field(s) {', '.join(unknown)}")


def _tally(summary: ImportSummary, label: str, created: bool, changed: bool) -> None:
    if created:
        summary.created.append(label)
    elif changed:
        summary.updated.append(label)
    else:
        summary.unchanged.append(label)
