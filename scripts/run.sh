#!/usr/bin/env bash
# `make run`: a working BeastMode with a demo model on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
SERVER=${SERVER:-daphne}
DEMO_UPSTREAM_PORT=${DEMO_UPSTREAM_PORT:-9001}

scripts/venv.sh
. scripts/secrets.sh
.venv/bin/python manage.py migrate --noinput -v0

.venv/bin/python -m devtools.fake_upstream --port "$DEMO_UPSTREAM_PORT" &
upstream_pid=$!
trap 'kill $upstream_pid 2>/dev/null || true' EXIT

key=$(.venv/bin/python manage.py load_demo --upstream-url "http://127.0.0.1:$DEMO_UPSTREAM_PORT/v1" 2> var/demo-login.txt)
cat <<BANNER

  BeastMode on http://$HOST:$PORT  (server: $SERVER)
  demo upstream on http://127.0.0.1:$DEMO_UPSTREAM_PORT/v1, model "demo"
  $(cat var/demo-login.txt) at http://$HOST:$PORT/admin/
  service key: $key

  from openai import OpenAI
  client = OpenAI(base_url="http://$HOST:$PORT/v1", api_key="$key")
  print(client.chat.completions.create(model="demo",
        messages=[{"role": "user", "content": "Hello!"}]).choices[0].message.content)

BANNER

case "$SERVER" in
  daphne) .venv/bin/daphne -b "$HOST" -p "$PORT" beastmode.asgi:application ;;
  uvicorn) .venv/bin/uvicorn beastmode.asgi:application --host "$HOST" --port "$PORT" \
             --no-access-log --ws websockets --timeout-graceful-shutdown 19 ;;
  *) echo "SERVER must be daphne or uvicorn, got '$SERVER'" >&2; exit 2 ;;
esac
