"""Settings for the test suite: the real settings, with test secrets and quick timers."""

import os

os.environ.setdefault("BEASTMODE_SECRET_KEY", "test-secret-key-not-for-production")
# A fixed Fernet key so the live server the tests start decrypts what the tests stored.
os.environ.setdefault("BEASTMODE_ENCRYPTION_KEY", "0mVTkN3tAPR0TtoP6Iu0Y4V0m3k5mC3dS6iVnSsvl8I=")
os.environ.setdefault("BEASTMODE_REGISTRY_REFRESH_S", "0.1")
os.environ.setdefault("BEASTMODE_RECORD_FLUSH_INTERVAL_S", "0.05")
os.environ.setdefault("BEASTMODE_CACHE_L3_WRITE_INTERVAL_S", "0.05")
os.environ.setdefault("BEASTMODE_RETRY_BASE_DELAY_S", "0.02")
os.environ.setdefault("BEASTMODE_BREAKER_FAILURE_THRESHOLD", "3")
os.environ.setdefault("BEASTMODE_BREAKER_COOLDOWN_S", "1")
os.environ.setdefault("BEASTMODE_SEMANTIC_SYNC_S", "0.1")
os.environ.setdefault("BEASTMODE_MONITORING_PUSH_INTERVAL_S", "0.3")

# Under pytest-xdist each worker (gw0, gw1, ...) has its own Redis database and var/ folder
# (pytest-django gives it its own test database); the gateways it starts inherit them.
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
_var_dir = os.path.join(os.path.dirname(__file__), "..", "var")
os.environ.setdefault(
    "BEASTMODE_VAR_DIR", os.path.join(_var_dir, f"test-{_worker}") if _worker else _var_dir
)
if _worker and os.environ.get("REDIS_URL"):
    _redis_base = os.environ.setdefault("BEASTMODE_TEST_REDIS_URL", os.environ["REDIS_URL"])
    if os.environ["REDIS_URL"] == _redis_base:  # (not a Redis a test started for itself)
        _base, _, _db = _redis_base.rpartition("/")
        _worker_db = int(_db or 0) - int(_worker.removeprefix("gw"))
        if _worker_db < 0:
            raise RuntimeError(f"not enough Redis databases below {_redis_base} for {_worker}")
        os.environ["REDIS_URL"] = f"{_base}/{_worker_db}"

from beastmode.settings import *  # noqa: E402, F403

# A gateway process started by the tests must open the test database, not the dev one.
if _sqlite_test_name := os.environ.get("BEASTMODE_TEST_SQLITE_NAME"):
    DATABASES["default"]["NAME"] = _sqlite_test_name  # noqa: F405
