"""Declarative model configuration from YAML: `manage.py import_models FILE.yaml`.

Idempotent: endpoints are matched by name and routes by model name; importing the
same file twice changes nothing. API keys come from the environment variable the
file names (`api_key_env`), never from the file itself.
"""

import os
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import yaml
from django.db import transaction

from cache import controls, semantic_switch, similarity
from routing.models import ModelEndpoint, Route, RouteEndpoint

_ENDPOINT_FIELDS = {
    "name", "provider", "base_url", "model", "api_key_env", "timeout_s", "connect_timeout_s",
    "first_byte_timeout_s", "total_timeout_s", "max_retries", "input_cost_per_1m",
    "output_cost_per_1m", "enabled",
}  # fmt: skip
_MODEL_FIELDS = {"name", "endpoints", "description", "enabled", "cache"}


class ImportError_(ValueError):
    """The file is not a valid model configuration (message says where)."""


@dataclass
class ImportSummary:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def import_models(text: str) -> ImportSummary:
    try:
        data = yaml.safe_load(text)  # never yaml.load: the file may come from anyone
    except yaml.YAMLError as exc:
        raise ImportError_(f"not valid YAML: {exc}") from None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list):
        raise ImportError_("the file must have a top-level 'models:' list")
    summary = ImportSummary()
    with transaction.atomic():
        for index, spec in enumerate(models):
            _import_model(spec, f"models[{index}]", summary)
    return summary


def _import_model(spec: Any, where: str, summary: ImportSummary) -> None:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ImportError_(f"{where}: needs a 'name'")
    where = f"{where} ({spec['name']})"
    _reject_unknown(spec, _MODEL_FIELDS, where)
    endpoints = spec.get("endpoints")
    if not isinstance(endpoints, list) or not endpoints:
        raise ImportError_(f"{where}: needs a non-empty 'endpoints' list")
    chain = [
        _import_endpoint(ep, f"{where}.endpoints[{i}]", summary) for i, ep in enumerate(endpoints)
    ]
    route, created = Route.objects.get_or_create(model_name=spec["name"])
    wanted = {
        "description": spec.get("description", ""),
        "enabled": _flag(spec, "enabled", where),
        **_cache_fields(spec.get("cache"), f"{where}.cache"),
    }
    semantic_switch.mode_changed(
        route.model_name, was=route.semantic_mode, now=wanted["semantic_mode"]
    )
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
    _reject_unknown(spec, _ENDPOINT_FIELDS, where)
    for required in ("name", "base_url", "model"):
        if not spec.get(required):
            raise ImportError_(f"{where}: '{required}' is required")
    if spec.get("provider", "openai") not in ModelEndpoint.Provider.values:
        raise ImportError_(f"{where}: unknown provider {spec.get('provider')!r}")
    timeout_s = float(spec.get("timeout_s", 120))
    wanted: dict[str, Any] = {
        "provider": spec.get("provider", "openai"),
        "base_url": spec["base_url"],
        "upstream_model": spec["model"],
        "connect_timeout_s": float(spec.get("connect_timeout_s", min(5.0, timeout_s))),
        "first_byte_timeout_s": float(spec.get("first_byte_timeout_s", timeout_s)),
        "total_timeout_s": float(spec.get("total_timeout_s", timeout_s)),
        "max_retries": int(spec.get("max_retries", 2)),
        "input_cost_per_1m": Decimal(str(spec.get("input_cost_per_1m", 0))),
        "output_cost_per_1m": Decimal(str(spec.get("output_cost_per_1m", 0))),
        "enabled": _flag(spec, "enabled", where),
    }
    endpoint = ModelEndpoint.objects.filter(name=spec["name"]).first()
    created = endpoint is None
    if endpoint is None:
        endpoint = ModelEndpoint(name=spec["name"])
    changed = _apply(endpoint, wanted)
    if env_name := spec.get("api_key_env"):
        api_key = os.environ.get(env_name)
        if api_key is None:
            raise ImportError_(f"{where}: environment variable {env_name} is not set")
        if created or endpoint.get_api_key() != api_key:
            endpoint.set_api_key(api_key)
            changed = True
    if created or changed:
        endpoint.save()
    _tally(summary, f"endpoint {endpoint.name}", created, changed)
    return endpoint


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
