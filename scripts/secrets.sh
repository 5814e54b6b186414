#!/usr/bin/env bash
# Source me: generates the two local secrets under var/ once, exports their _FILE variables.
mkdir -p var
if [ -z "${BEASTMODE_SECRET_KEY:-}${BEASTMODE_SECRET_KEY_FILE:-}" ]; then
  [ -s var/secret_key ] || .venv/bin/python -c "import secrets; print(secrets.token_urlsafe(50))" > var/secret_key
  export BEASTMODE_SECRET_KEY_FILE="$PWD/var/secret_key"
fi
if [ -z "${BEASTMODE_ENCRYPTION_KEY:-}${BEASTMODE_ENCRYPTION_KEY_FILE:-}" ]; then
  [ -s var/encryption.key ] || .venv/bin/python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())" > var/encryption.key
  export BEASTMODE_ENCRYPTION_KEY_FILE="$PWD/var/encryption.key"
fi
chmod 600 var/secret_key var/encryption.key 2>/dev/null || true
