#!/usr/bin/env bash
# Source me: generates the two local secrets under var/ (BEASTMODE_VAR_DIR) once, readable
# by their owner only, and exports their _FILE variables.
var_dir=${BEASTMODE_VAR_DIR:-$PWD/var}
[ -d "$var_dir" ] || mkdir -p -m 700 "$var_dir"  # (the SQLite database lives there too)
if [ -z "${BEASTMODE_SECRET_KEY:-}${BEASTMODE_SECRET_KEY_FILE:-}" ]; then
  [ -s "$var_dir/secret_key" ] || (umask 077; .venv/bin/python -c \
    "import secrets; print(secrets.token_urlsafe(50))" > "$var_dir/secret_key")
  export BEASTMODE_SECRET_KEY_FILE="$var_dir/secret_key"
fi
if [ -z "${BEASTMODE_ENCRYPTION_KEY:-}${BEASTMODE_ENCRYPTION_KEY_FILE:-}" ]; then
  [ -s "$var_dir/encryption.key" ] || (umask 077; .venv/bin/python -c \
    "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())" \
    > "$var_dir/encryption.key")
  export BEASTMODE_ENCRYPTION_KEY_FILE="$var_dir/encryption.key"
fi
# (files made by older versions of this script were 0644)
for secret in "$var_dir/secret_key" "$var_dir/encryption.key" "$var_dir/demo-service-key"; do
  [ -f "$secret" ] && chmod 600 "$secret"
done
true
