"""What an upstream is: the provider, the base URL and the upstream model id. An endpoint's
name, API key, timeouts, retries and prices do not change the answers; these three do."""

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit


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
