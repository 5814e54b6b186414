#!/usr/bin/env bash
# `make test`: lint, type-check, the whole suite against real Postgres and Redis, then the
# tests marked `embedded` against the embedded default (SQLite, no Redis, in-process tasks).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/venv.sh requirements-dev.txt
scripts/services.sh
scripts/browser.sh

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy  # the packages in pyproject.toml's [tool.mypy] files

# Most tests wait on live processes, not on the CPU: TEST_WORKERS pytest-xdist workers (each
# with its own database, Redis database and var/ folder: beastmode/settings_test.py) share
# the machine. TEST_WORKERS=0 runs in this process.
workers=(-n "${TEST_WORKERS:-4}" --dist loadfile)

echo "== suite against PostgreSQL and Redis" >&2
env DATABASE_URL="postgres://postgres@127.0.0.1:5432/beastmode" \
    REDIS_URL="redis://127.0.0.1:6379/15" \
    .venv/bin/python -m pytest -q "${workers[@]}" "$@"

echo "== embedded default (SQLite, no Redis, in-process tasks)" >&2
env -u DATABASE_URL -u REDIS_URL -u CELERY_BROKER_URL \
    .venv/bin/python -m pytest -q -m embedded "${workers[@]}" "$@"
