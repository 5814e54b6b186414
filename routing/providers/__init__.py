"""Upstream provider kinds. A new kind (e.g. Anthropic) is one new module registered here."""

from routing.providers import openai
from routing.providers.base import Provider

PROVIDERS: dict[str, Provider] = {"openai": openai.PROVIDER}


def for_kind(kind: str) -> Provider:
    return PROVIDERS[kind]
