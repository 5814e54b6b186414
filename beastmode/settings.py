"""Settings: every value from the environment, with defaults that run a fresh checkout.

Nothing set = SQLite file, no Redis, in-memory channel layer, Celery tasks in-process.
DATABASE_URL and REDIS_URL switch on the production parts. See .env.example.
"""

import importlib.util
import warnings
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from psycopg_pool.base import AttemptWithBackoff
from redis.backoff import NoBackoff
from redis.retry import Retry

from beastmode.env import database_from_url, env_bool, env_float, env_int, env_secret, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("BEASTMODE_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", "false")
# Unset, both fall back to the files `make run` generates under var/ (scripts/secrets.sh),
# so manage.py works in a second terminal of the embedded default.
SECRET_KEY = env_secret("BEASTMODE_SECRET_KEY", VAR_DIR / "secret_key")
# Upstream API keys are encrypted with this Fernet key, deliberately not SECRET_KEY.
ENCRYPTION_KEY = env_secret("BEASTMODE_ENCRYPTION_KEY", VAR_DIR / "encryption.key")
if not SECRET_KEY or not ENCRYPTION_KEY:
    raise ImproperlyConfigured(
        "BEASTMODE_SECRET_KEY and BEASTMODE_ENCRYPTION_KEY (or their _FILE variants) must be "
        "set; `make run` generates both under var/ on first start."
    )

ALLOWED_HOSTS = [h for h in env_str("ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h]
CSRF_TRUSTED_ORIGINS = [o for o in env_str("CSRF_TRUSTED_ORIGINS", "").split(",") if o]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "routing",
    "cache",
    "monitoring",
    "gateway",
    "devtools",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "beastmode.urls"
ASGI_APPLICATION = "beastmode.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": database_from_url(DATABASE_URL)}
    # psycopg_pool waits 1, 2, 4, 8 s... between attempts to reconnect (not an option): after
    # a 20 s outage requests failed 10-12 s longer. An attempt every second instead.
    AttemptWithBackoff.DELAY_BACKOFF = 1.0
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "beastmode.sqlite3",
            # A file, not memory, so a live server started by the tests sees the test data.
            "TEST": {"NAME": VAR_DIR / "test.sqlite3"},
            # Kept open: the writer threads closed and reopened it every batch (a new
            # connection registers Django's SQL functions and reads the schema again).
            "CONN_MAX_AGE": None,
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }

REDIS_URL = env_str("REDIS_URL")
# Service keys' limits while Redis is away: "open" enforces them in each process on its
# own (N processes allow up to N times a limit), "closed" refuses limited keys (503).
RATE_LIMITS_WITHOUT_REDIS = env_str("BEASTMODE_RATE_LIMITS_WITHOUT_REDIS", "open")
if RATE_LIMITS_WITHOUT_REDIS not in ("open", "closed"):
    raise ImproperlyConfigured("BEASTMODE_RATE_LIMITS_WITHOUT_REDIS must be open or closed")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {
                # Short timeouts, no retries: cache/tiers.py adds a breaker, so a Redis
                # outage costs one short timeout per breaker window, never a stall.
                "SOCKET_CONNECT_TIMEOUT": 0.2,
                "SOCKET_TIMEOUT": 0.2,
                "CONNECTION_POOL_KWARGS": {"retry": Retry(NoBackoff(), 0)},
                # JSON, not pickle: nothing read back from Redis is ever unpickled.
                "SERIALIZER": "django_redis.serializers.json.JSONSerializer",
            },
        }
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # A consumer waits for its next message in a blocking pop of up to 5 s
            # (RedisChannelLayer.brpop_timeout); redis-py's own socket timeout is also 5 s,
            # so an idle read timed out first and the consumer crashed (1011). The socket
            # timeout sits well above the pop's.
            "CONFIG": {
                "hosts": [
                    {"address": REDIS_URL, "socket_timeout": 15.0, "socket_connect_timeout": 2.0}
                ]
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Celery: with no broker, tasks run in-process (see beastmode/lib/dispatch.py).
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A message a worker took but did not acknowledge (its main process was killed) is given
# to another worker after this long. Jobs hold a lease (gateway/jobs.py), so a message
# delivered twice still runs its job once at a time; the reaper below does not wait for it.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 600, "socket_connect_timeout": 1}
# A running job's lease, renewed by its heartbeat; a job whose lease ran out (its worker
# died) is run again, at most JOB_MAX_ATTEMPTS times in all, by the reaper, which also
# sends again jobs queued longer than JOB_RESEND_AFTER_S (their message was lost).
JOB_LEASE_S = env_float("BEASTMODE_JOB_LEASE_S", "30")
JOB_MAX_ATTEMPTS = env_int("BEASTMODE_JOB_MAX_ATTEMPTS", "3")
JOB_RESEND_AFTER_S = env_float("BEASTMODE_JOB_RESEND_AFTER_S", "120")
JOB_REAP_INTERVAL_S = env_float("BEASTMODE_JOB_REAP_INTERVAL_S", "30")
# With Redis, one beat in the cluster holds a lock (beastmode/celery.py); a beat killed
# while holding it is replaced within 5 x this.
BEAT_MAX_INTERVAL_S = env_float("BEASTMODE_BEAT_MAX_INTERVAL_S", "5")
ENDPOINT_PROBE_INTERVAL_S = env_float("BEASTMODE_ENDPOINT_PROBE_INTERVAL_S", "60")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# plotly.js is served from the copy the plotly package ships, never from a CDN.
_PLOTLY_SPEC = importlib.util.find_spec("plotly")
STATICFILES_DIRS = [BASE_DIR / "static"]
if _PLOTLY_SPEC and _PLOTLY_SPEC.submodule_search_locations:
    _PLOTLY_DIR = Path(next(iter(_PLOTLY_SPEC.submodule_search_locations))) / "package_data"
    STATICFILES_DIRS.append(("plotly", _PLOTLY_DIR))
WHITENOISE_USE_FINDERS = True
# Served through the finders until `collectstatic` fills STATIC_ROOT; no warning meanwhile.
warnings.filterwarnings("ignore", message="No directory at: ")  # whitenoise, at startup

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    # Every record's message, args and traceback lose upstream key fragments first.
    "filters": {"secrets": {"()": "beastmode.lib.redaction.RedactingFilter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["secrets"]}
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # faiss narrates which CPU build it loads at every start.
    "loggers": {"faiss.loader": {"level": "WARNING"}},
}

# --- BeastMode ---
# Request bodies above this size are refused with 413 before they are read in full.
MAX_BODY_BYTES = env_int("BEASTMODE_MAX_BODY_BYTES", str(4 * 1024 * 1024))
# Request bodies nested deeper than this are refused with 400 `json_too_deep` (the body
# object is level 1; a tool's JSON schema nested 10 levels takes about 25). At most 900:
# the standard library's parser, which reads what orjson refuses, stops near 1,000.
MAX_JSON_DEPTH = min(env_int("BEASTMODE_MAX_JSON_DEPTH", "64"), 900)
# How often each process checks whether admins changed keys, routes or endpoints.
REGISTRY_REFRESH_S = env_float("BEASTMODE_REGISTRY_REFRESH_S", "0.5")
# Request records are written in batches off the hot path.
RECORD_FLUSH_INTERVAL_S = env_float("BEASTMODE_RECORD_FLUSH_INTERVAL_S", "2")
RECORD_BATCH_SIZE = env_int("BEASTMODE_RECORD_BATCH_SIZE", "4000")
RECORD_SPOOL_PATH = VAR_DIR / "unwritten-records.jsonl"
REJECTED_RECORDS_PATH = VAR_DIR / "rejected-records.jsonl"  # records the database refused
# On SIGTERM a node lets requests in flight finish for this long less 5 s, then writes out
# its records (beastmode/shutdown.py); set it below your orchestrator's kill timeout.
SHUTDOWN_GRACE_S = env_float("BEASTMODE_SHUTDOWN_GRACE_S", "25")
# While the database is down, records beyond this many wait in the spool file instead.
RECORD_MAX_PENDING = env_int("BEASTMODE_RECORD_MAX_PENDING", "100000")
# Router: retries, Retry-After cap, circuit breaker.
RETRY_BASE_DELAY_S = env_float("BEASTMODE_RETRY_BASE_DELAY_S", "0.2")
RETRY_MAX_DELAY_S = env_float("BEASTMODE_RETRY_MAX_DELAY_S", "5")
RETRY_AFTER_CAP_S = env_float("BEASTMODE_RETRY_AFTER_CAP_S", "10")
BREAKER_FAILURE_THRESHOLD = env_int("BEASTMODE_BREAKER_FAILURE_THRESHOLD", "5")
BREAKER_COOLDOWN_S = env_float("BEASTMODE_BREAKER_COOLDOWN_S", "30")
# Cache tiers: lifetimes (a model's ttl_s overrides them) and L1's bounds.
CACHE_L1_TTL_S = env_int("BEASTMODE_CACHE_L1_TTL_S", "3600")
CACHE_L2_TTL_S = env_int("BEASTMODE_CACHE_L2_TTL_S", "7200")
CACHE_L3_TTL_S = env_int("BEASTMODE_CACHE_L3_TTL_S", "86400")
# Answers reach L3 in one upsert this often (L1 and L2 hold them until then). Each upsert
# holds the GIL for a while, which the P99 pays for (docs/PERFORMANCE.md, session 5).
CACHE_L3_WRITE_INTERVAL_S = env_float("BEASTMODE_CACHE_L3_WRITE_INTERVAL_S", "4")
# A request waits this long at most for an L3 lookup; a slower or failed one is a miss,
# and the database is skipped for a few seconds (cache/layers.py).
CACHE_DATABASE_WAIT_S = env_float("BEASTMODE_CACHE_DATABASE_WAIT_S", "0.25")
# An async-job request (POST, GET) waits this long at most for the database, then gets 503.
API_DATABASE_WAIT_S = env_float("BEASTMODE_API_DATABASE_WAIT_S", "1")
# How long an async job's submission waits for the broker (Celery retries a refused
# connection a few times) before it answers 503 queue_unavailable.
API_QUEUE_WAIT_S = env_float("BEASTMODE_API_QUEUE_WAIT_S", "2")
CACHE_L1_MAX_ENTRIES = env_int("BEASTMODE_CACHE_L1_MAX_ENTRIES", "20000")
CACHE_L1_MAX_BYTES = env_int("BEASTMODE_CACHE_L1_MAX_BYTES", str(64 * 1024 * 1024))
# Warming: refresh the most requested answers expiring within the horizon.
CACHE_REFRESH_HORIZON_S = env_int("BEASTMODE_CACHE_REFRESH_HORIZON_S", "900")
CACHE_REFRESH_LIMIT = env_int("BEASTMODE_CACHE_REFRESH_LIMIT", "50")
CACHE_WARMUP_INTERVAL_S = env_int("BEASTMODE_CACHE_WARMUP_INTERVAL_S", "3600")
# Semantic index: most vectors kept per process (oldest dropped beyond).
SEMANTIC_MAX_ENTRIES = env_int("BEASTMODE_SEMANTIC_MAX_ENTRIES", "1000000")
# How often each process picks up vectors other processes stored.
SEMANTIC_SYNC_S = env_float("BEASTMODE_SEMANTIC_SYNC_S", "2")
# Semantic pairs (hits and shadow-mode would-be hits) are pruned after this many days;
# pairs an admin marked false are kept: they are the evaluation set and a block list.
CACHE_SEMANTIC_PAIR_RETENTION_DAYS = env_int("BEASTMODE_CACHE_SEMANTIC_PAIR_RETENTION_DAYS", "30")
# Dashboard: push interval; raw records are pruned after RECORD_RETENTION_DAYS, minute
# rollups after 2 days, hour rollups after ROLLUP_RETENTION_DAYS.
MONITORING_PUSH_INTERVAL_S = env_float("BEASTMODE_MONITORING_PUSH_INTERVAL_S", "5")
RECORD_RETENTION_DAYS = env_int("BEASTMODE_RECORD_RETENTION_DAYS", "30")
ROLLUP_RETENTION_DAYS = env_int("BEASTMODE_ROLLUP_RETENTION_DAYS", "400")
# Optional bearer token for /metrics; empty = open.
METRICS_TOKEN = env_secret("BEASTMODE_METRICS_TOKEN")
# /metrics counts every process of the node: each writes its figures to files here (one
# directory per node, shared by its processes; emptied when the node starts anew).
METRICS_DIR = Path(env_str("BEASTMODE_METRICS_DIR", str(VAR_DIR / "metrics")))
