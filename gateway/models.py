from django.core.exceptions import ValidationError
from django.db import models

from beastmode.lib.chat_request import ChatRequest, check_chat_body
from beastmode.lib.errors import GatewayError
from routing.models import Route

# Set by warming, not by a prompt: it sends the prompt's model and messages, never streams,
# and always stores a fresh answer.
_NOT_WARMUP_PARAMETERS = ("model", "messages", "stream", "stream_options", "cache")


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

    class Meta:
        db_table = "cache_warmupprompt"  # moved here from the cache app; same table

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
