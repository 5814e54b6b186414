from django.db import models


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
    response = models.JSONField()
    size_bytes = models.PositiveIntegerField(default=0)
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    endpoint = models.CharField(max_length=100, blank=True, default="")
    hits = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name_plural = "cache entries"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.model} [{self.namespace}] {self.key[:12]}"
