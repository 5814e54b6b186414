"""The demo's admin login and service key: made by the first `make run`, reused by later
ones, replaced by `make reset-demo`.

The key's plaintext is kept in a 0600 file under var/ (the database has only its hash) so
every start can print it again; the password is never stored: it is printed when set.
"""

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model

from routing.models import ServiceKey
from routing.service_keys import create_service_key, hash_key

ADMIN_USERNAME = "admin"
KEY_NAME = "demo"


def key_file() -> Path:
    return Path(settings.VAR_DIR) / "demo-service-key"


def ensure_admin(*, reset: bool = False) -> str | None:
    """Make the admin login (or give it a new password when `reset`); returns the password
    it set, or None when the login already existed and is left unchanged."""
    user = get_user_model().objects.filter(username=ADMIN_USERNAME).first()
    if user is not None and not reset:
        return None
    user = user or get_user_model()(username=ADMIN_USERNAME)
    password = secrets.token_urlsafe(12)
    user.is_staff = user.is_superuser = True
    user.set_password(password)
    user.save()
    return password


def ensure_key(*, reset: bool = False) -> str:
    """The demo service key: the stored one while it still works, else a new one. With
    `reset`, always a new one, and every other key named 'demo' is revoked."""
    path = key_file()
    if reset:
        for old in ServiceKey.objects.filter(name=KEY_NAME, revoked_at__isnull=True):
            old.revoke()
    elif (stored := _read(path)) and _works(stored):
        return stored
    _, raw_key = create_service_key(KEY_NAME)
    _write_private(path, raw_key)
    return raw_key


def _works(raw_key: str) -> bool:
    return ServiceKey.objects.filter(key_hash=hash_key(raw_key), revoked_at__isnull=True).exists()


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


def _write_private(path: Path, text: str) -> None:
    """Write `text` to a file only its owner may read, from its first byte on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # (an older file keeps its mode through O_CREAT)
    with os.fdopen(descriptor, "w") as file:
        file.write(text + "\n")
