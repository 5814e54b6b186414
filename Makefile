.PHONY: run test lint bench

# Serve BeastMode with a demo model (HOST, PORT, SERVER=daphne|uvicorn override).
run:
	@scripts/run.sh

# The whole test suite against real Postgres and Redis, then the embedded default.
test:
	@scripts/test.sh

lint:
	@scripts/venv.sh requirements-dev.txt && .venv/bin/ruff check . && .venv/bin/ruff format --check . \
	  && .venv/bin/mypy

bench:
	@scripts/venv.sh requirements-dev.txt && .venv/bin/python bench/gateway.py
