"""Encryption at rest for upstream API keys, with a dedicated key (not SECRET_KEY)."""

from functools import cache

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@cache
def _fernet() -> Fernet:
    try:
        return Fernet(settings.ENCRYPTION_KEY.encode())
    except ValueError:
        raise ImproperlyConfigured(
            "BEASTMODE_ENCRYPTION_KEY must be a Fernet key (32 url-safe base64 bytes); "
            'make one with: python -c "from cryptography.fernet import Fernet; '
            'print(Fernet.generate_key().decode())"'
        ) from None


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    """The plaintext; raises ImproperlyConfigured when the encryption key has changed."""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise ImproperlyConfigured(
            "an upstream API key cannot be decrypted: BEASTMODE_ENCRYPTION_KEY changed"
        ) from None
