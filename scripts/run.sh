#!/usr/bin/env bash
# `make run`: a working BeastMode with a demo model on a fresh machine. The first run makes
# the admin login and a demo service key; later runs reuse both (`make reset-demo` replaces
# them: scripts/run.sh --reset-demo).
set -euo pipefail
cd "$(dirname "$0")/.."
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
SERVER=${SERVER:-daphne}
DEMO_UPSTREAM_PORT=${DEMO_UPSTREAM_PORT:-9001}
export BEASTMODE_VAR_DIR=${BEASTMODE_VAR_DIR:-$PWD/var}

case "$SERVER" in
  daphne|uvicorn) ;;
  *) echo "SERVER must be daphne or uvicorn, got '$SERVER'" >&2; exit 2 ;;
esac

if [ "${1:-}" = "--reset-demo" ]; then
  scripts/venv.sh
  . scripts/secrets.sh
  .venv/bin/python manage.py migrate --noinput -v0
  .venv/bin/python manage.py reset_demo
  exit
fi

# Before anything starts: a taken port would otherwise route `demo` to whatever holds it.
python3 scripts/check_ports.py "$HOST" "$PORT" PORT 127.0.0.1 "$DEMO_UPSTREAM_PORT" DEMO_UPSTREAM_PORT

scripts/venv.sh
. scripts/secrets.sh
rm -f "$BEASTMODE_VAR_DIR/demo-login.txt"  # older runs kept the password there
.venv/bin/python manage.py migrate --noinput -v0

.venv/bin/python -m devtools.fake_upstream --port "$DEMO_UPSTREAM_PORT" &
upstream_pid=$!
trap 'kill $upstream_pid 2>/dev/null || true' EXIT

login_file=$(mktemp)  # (0600) the login line, shown in the banner
key=$(.venv/bin/python manage.py load_demo \
  --upstream-url "http://127.0.0.1:$DEMO_UPSTREAM_PORT/v1" 2> "$login_file")
login=$(cat "$login_file"); rm -f "$login_file"
# The demo upstream must be ours and up (someone may have taken the port meanwhile).
upstream_up() {
  kill -0 "$upstream_pid" 2>/dev/null && python3 -c \
    "import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 0.2)" \
    "$DEMO_UPSTREAM_PORT" 2>/dev/null
}
for _ in $(seq 100); do
  upstream_up && break
  kill -0 "$upstream_pid" 2>/dev/null || break
  sleep 0.1
done
if ! upstream_up; then
  echo "the demo upstream did not start on port $DEMO_UPSTREAM_PORT: set DEMO_UPSTREAM_PORT=… to use another" >&2
  exit 1
fi

cat <<BANNER

  BeastMode on http://$HOST:$PORT  (server: $SERVER)
  demo upstream on http://127.0.0.1:$DEMO_UPSTREAM_PORT/v1, model "demo"
  admin: http://$HOST:$PORT/admin/  login: $login
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
esac
