#!/usr/bin/env bash
# The browser test drives Debian's chromium (/usr/bin/chromium) with Playwright, which
# downloads no browser of its own: install the apt package if it is missing.
set -euo pipefail
[ -x /usr/bin/chromium ] && exit 0
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }
echo "installing chromium with apt (for the dashboard's browser test) ..." >&2
as_root apt-get install -y -qq chromium >/dev/null 2>&1 \
  || { as_root apt-get update -qq && as_root apt-get install -y -qq chromium >/dev/null; }
