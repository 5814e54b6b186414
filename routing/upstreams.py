"""What an upstream is: the provider, the base URL and the upstream model id. An endpoint's
name, API key, timeouts, retries and prices do not change the answers; these three do."""

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.core.exceptions import ValidationError


@dataclass(frozen=True)
class Upstream:
    provider: str
    base_url: str  # normalized_url
    model: str

    @classmethod
    def of(cls, provider: str, base_url: str, model: str) -> "Upstream":
        return cls(provider, normalized_url(base_url), model)

    def __str__(self) -> str:
        return f"{self.model} at {self.base_url} ({self.provider})"


def normalized_url(url: str) -> str:
    """The URL up to a trailing slash and the case of its scheme and host."""
    parts = urlsplit(url.strip())
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, parts.query, ""))


def is_http_url(value: Any) -> bool:
    """An http(s) URL with a host. Unlike Django's URLValidator, a host without a dot is
    one: a container's name (http://vllm:8000/v1) is how self-hosted upstreams are reached."""
    if not isinstance(value, str) or any(c.isspace() for c in value):
        return False
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError for a port that is not a number from 0 to 65535
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def validate_base_url(value: str) -> None:
    if not is_http_url(value):
        raise ValidationError(
            "Enter an http:// or https:// URL, like https://api.openai.com/v1 or "
            "http://vllm:8000/v1.",
            code="invalid",
        )
