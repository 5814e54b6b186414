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
os.environ.setdefault("BEASTMODE_VAR_DIR", os.path.join(os.path.dirname(__file__), "..", "var"))

from beastmode.settings import *  # noqa: F403

# A gateway process started by the tests must open the test database, not the dev one.
if _sqlite_test_name := os.environ.get("BEASTMODE_TEST_SQLITE_NAME"):
    DATABASES["default"]["NAME"] = _sqlite_test_name  # noqa: F405
MONITORING_PUSH_INTERVAL_S = 0.3
