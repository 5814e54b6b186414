from django.db import models
from django.utils import timezone


class CacheNamespace(models.Model):
    """Service keys put into one namespace share cached answers; by default none do."""

    name = models.SlugField(max_length=100, unique=True)
    description = models.CharField(max_length=300, blank=True, default="")

    def __str__(self) -> str:
        return self.name


class CacheEntry(models.Model):
    """L3, the durable tier; also what the semantic index is rebuilt from at start."""

    key = models.CharField(max_length=64, unique=True)
    namespace = models.CharField(max_length=120, db_index=True)
    model = models.CharField(max_length=200, db_index=True)
    partition = models.CharField(max_length=64, db_index=True)
    prompt_text = models.TextField()
    semantic_eligible = models.BooleanField(default=True)
    request = models.JSONField(default=dict, help_text="the body that produced it (for refresh)")
    response = models.JSONField()
    embedding = models.BinaryField(null=True, editable=False, help_text="float32 vector")
    size_bytes = models.PositiveIntegerField(default=0)
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    endpoint = models.CharField(max_length=100, blank=True, default="")
    hits = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)
    # When the row was last written: every upsert moves it (the id stays), so the semantic
    # sync of every process follows re-stored and refreshed entries (cache/semantic/index_sync.py).
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        verbose_name_plural = "cache entries"
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["updated_at", "id"], name="cache_entry_updated")]

    def __str__(self) -> str:
        return f"{self.model} [{self.namespace}] {self.key[:12]}"


class CachePurge(models.Model):
    """A purge every process applies to its L1 (and semantic index) when it sees it."""

    model = models.CharField(max_length=200, blank=True, default="")
    namespace = models.CharField(max_length=120, blank=True, default="")
    key = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)


class SemanticPair(models.Model):
    """A semantic match (served, or only computed in shadow mode), kept for evaluation."""

    request_id = models.CharField(max_length=64, db_index=True)
    model = models.CharField(max_length=200, db_index=True)
    namespace = models.CharField(max_length=120)
    partition = models.CharField(max_length=64, blank=True, default="")
    asked_text = models.TextField()
    cached_key = models.CharField(max_length=64)
    cached_text = models.TextField()
    similarity = models.FloatField()
    served = models.BooleanField(help_text="False in shadow mode: computed, not served")
    marked_false = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        # Pruning by age (cache/retention.py) and admin's newest-first list.
        indexes = [models.Index(fields=["created_at"], name="cache_pair_created")]

    def __str__(self) -> str:
        return f"{self.model} {self.similarity:.3f} {self.request_id}"
