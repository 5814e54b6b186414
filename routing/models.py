import time
from collections.abc import Collection, Iterable
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models, transaction
from django.utils import timezone

from beastmode.lib import redaction
from cache import controls
from cache.semantic import similarity
from routing import crypto
from routing.key_limits import PERIODS, model_limits_errors
from routing.upstreams import validate_base_url


class ModelEndpoint(models.Model):
    """One upstream deployment BeastMode can call."""

    class Provider(models.TextChoices):
        OPENAI = "openai", "OpenAI-compatible"

    name = models.SlugField(max_length=100, unique=True)
    provider = models.CharField(max_length=32, choices=Provider.choices, default=Provider.OPENAI)
    base_url = models.CharField(
        max_length=500,
        validators=[validate_base_url],
        help_text="e.g. https://api.openai.com/v1 or http://vllm:8000/v1",
    )
    upstream_model = models.CharField(max_length=200, help_text="model id sent upstream")
    api_key_encrypted = models.TextField(blank=True, default="", editable=False)
    connect_timeout_s = models.FloatField(default=5.0)
    first_byte_timeout_s = models.FloatField(default=30.0)
    total_timeout_s = models.FloatField(default=120.0)
    max_retries = models.PositiveSmallIntegerField(default=2)
    input_cost_per_1m = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    output_cost_per_1m = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def set_api_key(self, api_key: str) -> None:
        redaction.remember((api_key,))
        self.api_key_encrypted = crypto.encrypt(api_key) if api_key else ""

    def get_api_key(self) -> str:
        """The key, decrypted; from now on this process redacts it everywhere
        (beastmode/lib/redaction.py)."""
        api_key = crypto.decrypt(self.api_key_encrypted) if self.api_key_encrypted else ""
        redaction.remember((api_key,))
        return api_key

    @property
    def has_api_key(self) -> bool:
        return bool(self.api_key_encrypted)


class Route(models.Model):
    """A model name clients send, mapped to an ordered chain of endpoints."""

    class SemanticMode(models.TextChoices):
        OFF = "off"
        SHADOW = "shadow", "shadow (compute and record, never serve)"
        ON = "on"

    model_name = models.CharField(max_length=200, unique=True)
    description = models.CharField(max_length=300, blank=True, default="")
    enabled = models.BooleanField(default=True)
    cache_enabled = models.BooleanField(default=True, help_text="exact-match cache")
    semantic_mode = models.CharField(
        max_length=8, choices=SemanticMode.choices, default=SemanticMode.OFF
    )
    semantic_threshold = models.FloatField(
        default=similarity.DEFAULT_THRESHOLD,
        validators=[
            MinValueValidator(similarity.MIN_THRESHOLD),
            MaxValueValidator(similarity.MAX_THRESHOLD),
        ],
        help_text=f"similarity from {similarity.MIN_THRESHOLD} to {similarity.MAX_THRESHOLD} "
        "a cached answer needs to be served; higher = fewer, safer hits",
    )
    cache_ttl_s = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(controls.MAX_TTL_S)],
        help_text="lifetime of this model's cached answers in seconds (at most a year); "
        "empty = defaults",
    )
    timeout_s = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.1)],
        help_text="the whole request's limit in seconds: every endpoint, retry and fallback; "
        "empty = the sum of the endpoints' total timeouts",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model_name"]

    def __str__(self) -> str:
        return self.model_name


class RouteEndpoint(models.Model):
    route = models.ForeignKey(Route, on_delete=models.CASCADE, related_name="chain")
    endpoint = models.ForeignKey(ModelEndpoint, on_delete=models.CASCADE, related_name="+")
    position = models.PositiveSmallIntegerField(default=0, help_text="0 = primary")

    class Meta:
        ordering = ["route", "position"]
        constraints = [
            models.UniqueConstraint(fields=["route", "endpoint"], name="route_endpoint_once")
        ]

    def __str__(self) -> str:
        return f"{self.route} #{self.position}: {self.endpoint}"


class ServiceKeyQuerySet(models.QuerySet["ServiceKey"]):
    """Bulk writes, which send no signals, still tell every process which keys changed."""

    def update(self, **kwargs: Any) -> int:
        with transaction.atomic(using=self.db):
            key_ids = list(self.select_for_update().values_list("id", flat=True))
            updated = super().update(**kwargs)
            RegistryVersion.objects.bump(key_ids=key_ids)
        return updated

    def bulk_create(
        self,
        objs: Iterable["ServiceKey"],
        batch_size: int | None = None,
        ignore_conflicts: bool = False,
        update_conflicts: bool = False,
        update_fields: Collection[str] | None = None,
        unique_fields: Collection[str] | None = None,
    ) -> list["ServiceKey"]:
        with transaction.atomic(using=self.db):
            created = super().bulk_create(
                objs, batch_size, ignore_conflicts, update_conflicts, update_fields, unique_fields
            )
            key_ids = [key.pk for key in created]
            if None in key_ids:  # conflicts ignored: which rows were written is unknown
                RegistryVersion.objects.bump(all_keys=True)
            else:
                RegistryVersion.objects.bump(key_ids=key_ids)
        return created


class ServiceKey(models.Model):
    """A client credential. Only a SHA-256 of the key is stored; the key is shown once."""

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, editable=False, help_text="visible start of the key")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    allowed_models = models.JSONField(
        default=list, blank=True, help_text="model names this key may use; empty = all"
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    cache_namespace = models.ForeignKey(
        "cache.CacheNamespace",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        help_text="share cached answers with the other keys of this namespace; empty = own",
    )
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Limits, enforced across the cluster (gateway/limits.py); empty = not limited.
    rpm = models.PositiveIntegerField(
        "requests per minute", null=True, blank=True, validators=[MinValueValidator(1)]
    )
    tpm = models.PositiveIntegerField(
        "tokens per minute",
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="prompt + completion tokens as the upstream reports them",
    )
    max_parallel = models.PositiveIntegerField(
        "concurrent requests", null=True, blank=True, validators=[MinValueValidator(1)]
    )
    budget_usd = models.DecimalField(
        "budget (USD)",
        max_digits=14,
        decimal_places=6,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="spend allowed per budget period; cache hits cost nothing",
    )
    budget_period = models.CharField(
        max_length=8,
        choices=[(period, period) for period in PERIODS],
        default="monthly",
        help_text="the budget resets at the start of each UTC day, week (Monday) or month",
    )
    model_limits = models.JSONField(
        default=dict,
        blank=True,
        help_text='per model, e.g. {"gpt-4o": {"rpm": 10}, "mini": {"rpm": 100, "tpm": 50000}}',
    )

    objects = ServiceKeyQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Together with its log row (routing/signals.py) or not at all: a change that no
        # process hears of would be a revocation that never takes effect.
        with transaction.atomic():
            super().save(*args, **kwargs)

    def clean(self) -> None:
        if errors := model_limits_errors(self.model_limits):
            raise ValidationError({"model_limits": errors})

    def revoke(self) -> None:
        self.revoked_at = timezone.now()
        self.save(update_fields=["revoked_at", "updated_at"])


# A change to more keys than this asks every process for a full reload instead of a log row
# per key (reading that many rows by id costs about what reading them all does).
KEY_LOG_MAX_KEYS = 5000
# The key log keeps an hour of changes (versions are nanosecond timestamps): a process
# further behind, or one that finds the log emptied, reloads everything.
KEY_LOG_RETENTION_NS = 3600 * 10**9


class RegistryVersionManager(models.Manager["RegistryVersion"]):
    def bump(self, *, key_ids: Collection[int] = (), all_keys: bool = False) -> int:
        """Move the version, so every process reloads, and log the service keys that
        changed, so they reload only those (`all_keys`: which ones is unknown, reload all).
        Returns the new version.

        The row stays locked until the caller's transaction commits, so versions become
        visible in the order they are given: whoever reads version V can read every
        change up to V. The version is a timestamp, not a counter, so a table emptied and
        refilled (as tests do) never comes back to a version a process already holds."""
        with transaction.atomic(using=self.db):
            row = self.select_for_update().filter(pk=1).first()
            if row is None:
                now_ns = time.time_ns()  # the log starts here: whoever is older reloads all
                self.bulk_create([RegistryVersion(pk=1, version=now_ns, log_since=now_ns)],
                                 ignore_conflicts=True)  # fmt: skip
                row = self.select_for_update().get(pk=1)
            row.version = max(row.version + 1, time.time_ns())
            key_ids = set(key_ids)
            if all_keys or len(key_ids) > KEY_LOG_MAX_KEYS:
                row.log_since, key_ids = row.version, set()
            elif row.log_since < row.version - 2 * KEY_LOG_RETENTION_NS:  # about once an hour
                row.log_since = row.version - KEY_LOG_RETENTION_NS
                ServiceKeyChange.objects.filter(version__lte=row.log_since).delete()
            row.save(update_fields=["version", "log_since"])
            ServiceKeyChange.objects.bulk_create(
                [ServiceKeyChange(version=row.version, key_id=key_id) for key_id in key_ids]
            )
        return row.version


class RegistryVersion(models.Model):
    """One row whose version moves whenever keys, routes or endpoints change.

    Every server process polls it (one cheap query per refresh) and, when it moved,
    reloads routes and endpoints and the service keys logged since its own version
    (ServiceKeyChange), so the hot path never queries the database.
    """

    version = models.BigIntegerField(default=0)
    # Every key change with a version above this one is in the log.
    log_since = models.BigIntegerField(default=0)

    objects = RegistryVersionManager()


class ServiceKeyChange(models.Model):
    """A service key was created, changed or deleted at this registry version."""

    version = models.BigIntegerField(db_index=True)
    key_id = models.BigIntegerField()  # no foreign key: the log outlives a deleted key


class AsyncJob(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    id = models.CharField(max_length=40, primary_key=True)
    service_key = models.ForeignKey(ServiceKey, on_delete=models.CASCADE, related_name="+")
    request_id = models.CharField(max_length=64)
    body = models.JSONField()
    # The request's cache controls: its `cache` field and Cache-Control header (cache/controls.py).
    cache_controls = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # A run holds a lease its heartbeat renews; a run that takes over a job whose lease ran
    # out is the next attempt, and only the latest attempt may finish the job.
    attempts = models.PositiveSmallIntegerField(default=0)
    lease_until = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["status"],
                condition=models.Q(status__in=["queued", "running"]),
                name="asyncjob_open",
            )
        ]


class EndpointProbe(models.Model):
    """Latest health probe of an endpoint (by the Celery probe task or the admin action)."""

    endpoint = models.OneToOneField(ModelEndpoint, on_delete=models.CASCADE, related_name="probe")
    ok = models.BooleanField()
    latency_ms = models.FloatField(null=True)
    error_class = models.CharField(max_length=40, blank=True, default="")
    message = models.TextField(blank=True, default="")
    checked_at = models.DateTimeField()


class KeySpend(models.Model):
    """What a service key spent per minute, hour and UTC day, summed from its records as
    they are written (monitoring/rollups.py). Budgets, /v1/key/info and admin read the
    days (kept for ever: a `total` budget needs them); the dashboard reads its window."""

    bucket_s = models.PositiveIntegerField(help_text="60, 3600 or 86400")
    bucket_start = models.DateTimeField()
    service_key_id = models.BigIntegerField()  # no foreign key: spend outlives a deleted key
    requests = models.PositiveIntegerField(default=0)
    tokens = models.BigIntegerField(default=0)
    cost_usd = models.FloatField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["bucket_s", "bucket_start", "service_key_id"],
                name="keyspend_one_per_bucket",
            )
        ]
        indexes = [models.Index(fields=["service_key_id", "bucket_s", "bucket_start"])]
