from django.db import models

# How the dashboard counts outcomes: errors (every endpoint failed, or a BeastMode bug)
# and rejections (the caller's request or key was refused).
ERROR_OUTCOMES = ("internal_error", "upstream_error")
REJECTED_OUTCOMES = ("auth_error", "client_error", "rate_limited")


class RequestRecord(models.Model):
    """Exactly one per request BeastMode received, whatever became of it."""

    class Outcome(models.TextChoices):
        SUCCESS = "success"
        CLIENT_ERROR = "client_error"  # malformed or invalid input, unknown model
        AUTH_ERROR = "auth_error"  # missing, wrong, revoked or expired key; model not allowed
        RATE_LIMITED = "rate_limited"  # over a service key's rate limit or budget
        UPSTREAM_ERROR = "upstream_error"  # every endpoint failed
        CLIENT_DISCONNECTED = "client_disconnected"
        ACCEPTED = "accepted"  # an async job was queued
        INTERNAL_ERROR = "internal_error"  # a BeastMode bug

    request_id = models.CharField(max_length=64, db_index=True)
    created_at = models.DateTimeField(db_index=True)
    method = models.CharField(max_length=8, default="POST")
    path = models.CharField(max_length=200)
    service_key_id = models.BigIntegerField(null=True, blank=True)
    service_key_name = models.CharField(max_length=100, blank=True, default="")
    model = models.CharField(max_length=200, blank=True, default="")
    endpoint = models.CharField(max_length=100, blank=True, default="")
    stream = models.BooleanField(default=False)
    is_async_job = models.BooleanField(default=False)
    attempts = models.PositiveSmallIntegerField(default=0)
    fallbacks = models.PositiveSmallIntegerField(default=0)
    attempt_log = models.JSONField(default=list, blank=True)
    outcome = models.CharField(max_length=24, choices=Outcome.choices)
    status_code = models.PositiveSmallIntegerField()
    latency_ms = models.FloatField()
    upstream_latency_ms = models.FloatField(default=0)
    overhead_ms = models.FloatField(default=0)
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    cost_usd = models.FloatField(default=0)
    is_warming = models.BooleanField(default=False)
    cache_outcome = models.CharField(
        max_length=8, blank=True, default="", help_text="miss, exact, semantic or shadow"
    )
    cache_tier = models.CharField(max_length=2, blank=True, default="")
    cache_similarity = models.FloatField(null=True, blank=True)
    cache_entry_key = models.CharField(max_length=64, blank=True, default="")
    saved_tokens_in = models.PositiveIntegerField(default=0)
    saved_tokens_out = models.PositiveIntegerField(default=0)
    cost_saved_usd = models.FloatField(default=0)
    error_class = models.CharField(max_length=40, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    error_tips = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["model", "created_at"]),
            models.Index(fields=["outcome", "created_at"]),
            # The dashboard's recent errors: the newest 20 errors are the first 20 entries,
            # however many records or errors there are (a scan of created_at filtered by
            # outcome walks every record since the last error; the index above sorts them all).
            models.Index(
                fields=["-created_at"],
                condition=models.Q(outcome__in=ERROR_OUTCOMES),
                name="monitoring_recent_errors",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.model} {self.outcome}"


class DashboardRollup(models.Model):
    """What the dashboard reads: per minute, hour and day, one total row and one row per
    (model, endpoint), with the outcomes it shows already counted. Warming is left out.

    Rows are shared by every process (writers take turns through a lock), so a window
    costs one row per bucket and pair, however many processes write; and a long window
    reads whole days where it can.
    """

    bucket_start = models.DateTimeField()
    bucket_s = models.PositiveIntegerField(help_text="60, 3600 or 86400")
    is_total = models.BooleanField(help_text="every request of the bucket; model, endpoint empty")
    model = models.CharField(max_length=200)
    endpoint = models.CharField(max_length=100)
    requests = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    rejected = models.PositiveIntegerField(default=0)
    looked_up = models.PositiveIntegerField(default=0, help_text="requests the cache saw")
    exact_hits = models.PositiveIntegerField(default=0)
    semantic_hits = models.PositiveIntegerField(default=0)
    l1_hits = models.PositiveIntegerField(default=0)
    l2_hits = models.PositiveIntegerField(default=0)
    l3_hits = models.PositiveIntegerField(default=0)
    cost_usd = models.FloatField(default=0)
    cost_saved_usd = models.FloatField(default=0)
    histogram = models.JSONField(default=list, help_text="dense: see monitoring/rollups.py")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["bucket_s", "bucket_start", "is_total", "model", "endpoint"],
                name="dashboard_rollup_one_row_per_pair",
            )
        ]
