"""What a model's route says about caching its answers."""

from dataclasses import dataclass


@dataclass(frozen=True)
class CachePolicy:
    """A model's cache settings (its route's)."""

    enabled: bool = True
    ttl_s: int | None = None  # None: CACHE_L3_TTL_S
    semantic_mode: str = "off"  # "off", "shadow" or "on"
    threshold: float = 0.95
    upstream: str = ""  # the primary upstream: part of every key (keys.derive)
