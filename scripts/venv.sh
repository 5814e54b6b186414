#!/usr/bin/env bash
# Create .venv with the machine's python3 and install requirements.txt when it changed.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat .venv/.requirements.sha256 2>/dev/null)" != "$want" ]; then
  echo "installing requirements into .venv ..." >&2
  # (this machine's pip config names extra index folders that may not exist: not our noise)
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  echo "$want" > .venv/.requirements.sha256
fi
