from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from routing.errors import GatewayError
from routing.models import Route
from routing.validation import ChatRequest, check_chat_body

# Set by warming, not by a prompt: it sends the prompt's model and messages, never streams,
# and always stores a fresh answer.
_NOT_WARMUP_PARAMETERS = ("model", "messages", "stream", "stream_options", "cache")


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
    # sync of every process follows re-stored and refreshed entries (cache/semantic_sync.py).
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        verbose_name_plural = "cache entries"
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["updated_at", "id"], name="cache_entry_updated")]

    def __str__(self) -> str:
        return f"{self.model} [{self.namespace}] {self.key[:12]}"


class WarmupPrompt(models.Model):
    """A prompt kept warm: answered on schedule and on demand, before anyone asks."""

    service_key = models.ForeignKey(
        "routing.ServiceKey",
        on_delete=models.CASCADE,
        help_text="whose namespace the answer is cached in",
    )
    model = models.CharField(max_length=200)
    messages = models.JSONField(help_text='e.g. [{"role": "user", "content": "Opening hours?"}]')
    parameters = models.JSONField(default=dict, blank=True, help_text='e.g. {"temperature": 0}')
    enabled = models.BooleanField(default=True)
    last_warmed_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_result = models.CharField(max_length=200, blank=True, default="", editable=False)

    def __str__(self) -> str:
        return f"{self.model}: {str(self.messages)[:60]}"

    def chat_request(self) -> ChatRequest:
        """The request warming sends, checked as the API checks a client's: GatewayError
        (param names the field) for what a client would be refused, such as an unknown
        role, `api_base` or a temperature of 7."""
        if not isinstance(self.parameters, dict):
            raise GatewayError(
                "invalid_request",
                "'parameters' must be an object like {\"temperature\": 0}.",
                param="parameters",
            )
        if owned := sorted(set(_NOT_WARMUP_PARAMETERS).intersection(self.parameters)):
            raise GatewayError(
                "invalid_request",
                f"'{owned[0]}' is not a warm-up parameter: warming sends the prompt's model "
                "and messages, unstreamed, and stores a fresh answer.",
                param="parameters",
            )
        return check_chat_body({**self.parameters, "model": self.model, "messages": self.messages})

    def clean(self) -> None:
        try:
            self.chat_request()
        except GatewayError as error:
            param = error.param or "parameters"
            field = next((f for f in ("model", "messages") if param.startswith(f)), "parameters")
            raise ValidationError({field: error.message}) from None
        if not Route.objects.filter(model_name=self.model).exists():
            raise ValidationError({"model": f"There is no model '{self.model}' (see Routes)."})
        key = self.service_key if self.service_key_id is not None else None
        if key is not None and key.allowed_models and self.model not in key.allowed_models:
            raise ValidationError(
                {"model": f"The service key '{key.name}' may not use the model '{self.model}'."}
            )


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
