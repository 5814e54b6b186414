"""Service keys: generation and hashing. Keys are 256-bit random, so a plain SHA-256 suffices."""

import hashlib
import secrets
from datetime import datetime
from typing import Any

from routing.models import ServiceKey

KEY_PREFIX = "bm-"


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def assign_new_key(service_key: ServiceKey) -> str:
    """Give an unsaved key its secret; returns the raw key, which is never stored."""
    raw_key = KEY_PREFIX + secrets.token_urlsafe(32)
    service_key.prefix = raw_key[:10]
    service_key.key_hash = hash_key(raw_key)
    return raw_key


def create_service_key(
    name: str,
    *,
    allowed_models: list[str] | None = None,
    expires_at: datetime | None = None,
    **limits: Any,
) -> tuple[ServiceKey, str]:
    """Create a key; returns the row and the raw key, to be shown once. `limits`: rpm,
    tpm, max_parallel, budget_usd, budget_period, model_limits (ValidationError if bad)."""
    service_key = ServiceKey(
        name=name, allowed_models=allowed_models or [], expires_at=expires_at, **limits
    )
    service_key.full_clean(exclude=["prefix", "key_hash", "cache_namespace"])
    raw_key = assign_new_key(service_key)
    service_key.save()
    return service_key, raw_key
