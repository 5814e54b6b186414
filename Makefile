.PHONY: run reset-demo test lint bench

# Serve BeastMode with a demo model (HOST, PORT, DEMO_UPSTREAM_PORT, SERVER=daphne|uvicorn
# override). The first run makes the admin login and a demo service key; later runs reuse them.
run:
	@scripts/run.sh

# A new admin password and a new demo service key (the old key is revoked).
reset-demo:
	@scripts/run.sh --reset-demo

# The whole test suite against real Postgres and Redis, then the embedded default.
test:
	@scripts/test.sh

lint:
	@scripts/venv.sh requirements-dev.txt && .venv/bin/ruff check . && .venv/bin/ruff format --check . \
	  && .venv/bin/mypy

bench:
	@scripts/venv.sh requirements-dev.txt && .venv/bin/python bench/gateway.py
