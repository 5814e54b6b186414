#!/usr/bin/env bash
# Create .venv with the machine's python3 and install a requirements file (requirements.txt
# unless named: `scripts/venv.sh requirements-dev.txt`) when it, or a file it includes with
# `-r`, changed since it was last installed.
set -euo pipefail
cd "$(dirname "$0")/.."
file=${1:-requirements.txt}
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# The hash of a file and the files it includes (one level, as requirements-dev.txt has).
digest() { cat "$1" $(sed -n 's/^-r[[:space:]]*//p' "$1") | sha256sum | cut -d' ' -f1; }
stamp() { echo ".venv/.$1.sha256"; }
if [ "$(cat "$(stamp "$file")" 2>/dev/null)" != "$(digest "$file")" ]; then
  echo "installing $file into .venv ..." >&2
  # (this machine's pip config names extra index folders that may not exist: not our noise)
  .venv/bin/pip install --quiet --disable-pip-version-check -r "$file" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  # Installing a file installs what it includes too: a later run for those installs nothing.
  for done_file in "$file" $(sed -n 's/^-r[[:space:]]*//p' "$file"); do
    digest "$done_file" > "$(stamp "$done_file")"
  done
fi
