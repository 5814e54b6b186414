from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from cache.semantic import switch
from routing import breaker, health, repointing, service_keys, spend
from routing.models import ModelEndpoint, Route, RouteEndpoint, ServiceKey


class PurgesRepointedModels(admin.ModelAdmin):
    """Saves (inlines included) and deletes that point a model to another upstream purge
    its cached answers once committed, and tell the admin (routing/repointing.py)."""

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        if request.method != "POST":
            return super().changeform_view(request, object_id, form_url, extra_context)
        with repointing.purging_repointed_models() as repoints:
            response = super().changeform_view(request, object_id, form_url, extra_context)
        self._tell_purged(request, repoints)
        return response

    def delete_model(self, request: HttpRequest, obj: Model) -> None:
        with repointing.purging_repointed_models() as repoints:
            super().delete_model(request, obj)
        self._tell_purged(request, repoints)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        with repointing.purging_repointed_models() as repoints:
            super().delete_queryset(request, queryset)
        self._tell_purged(request, repoints)

    def _tell_purged(self, request: HttpRequest, repoints: list[repointing.Repoint]) -> None:
        for repoint in repoints:
            self.message_user(
                request,
                f"Purged the cached answers of model '{repoint.model_name}' from every tier: "
                f"{repoint.reason}.",
                messages.WARNING,
            )


class ModelEndpointForm(forms.ModelForm):
    # Write-only: the stored key is never rendered back into the page.
    api_key = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only. Leave empty to keep the current key.",
    )
    clear_api_key = forms.BooleanField(required=False, help_text="Remove the stored key.")

    class Meta:
        model = ModelEndpoint
        fields = [
            "name", "provider", "base_url", "upstream_model", "api_key", "clear_api_key",
            "connect_timeout_s", "first_byte_timeout_s", "total_timeout_s", "max_retries",
            "input_cost_per_1m", "output_cost_per_1m", "enabled",
        ]  # fmt: skip

    def save(self, commit: bool = True) -> ModelEndpoint:
        endpoint = super().save(commit=False)
        if self.cleaned_data.get("clear_api_key"):
            endpoint.set_api_key("")
        elif self.cleaned_data.get("api_key"):
            endpoint.set_api_key(self.cleaned_data["api_key"])
        if commit:
            endpoint.save()
        return endpoint


@admin.register(ModelEndpoint)
class ModelEndpointAdmin(PurgesRepointedModels):
    form = ModelEndpointForm
    list_display = [
        "name", "circuit", "last_probe", "enabled", "provider", "upstream_model", "has_key",
        "base_url",
    ]  # fmt: skip
    list_filter = ["provider", "enabled"]
    search_fields = ["name", "base_url", "upstream_model"]
    actions = ["test_connection"]

    @admin.display(boolean=True, description="API key set")
    def has_key(self, endpoint: ModelEndpoint) -> bool:
        return endpoint.has_api_key

    @admin.display(description="circuit")  # as this process's breaker sees it
    def circuit(self, endpoint: ModelEndpoint) -> str:
        return breaker.for_endpoint(endpoint.id).state

    @admin.display(description="last probe")
    def last_probe(self, endpoint: ModelEndpoint) -> str:
        probe = getattr(endpoint, "probe", None)
        if probe is None:
            return "—"
        return "ok" if probe.ok else probe.error_class

    def get_queryset(self, request: HttpRequest) -> QuerySet[ModelEndpoint]:
        return super().get_queryset(request).select_related("probe")

    @admin.action(description="Test connection")
    def test_connection(self, request: HttpRequest, queryset: QuerySet[ModelEndpoint]) -> None:
        for result in health.probe(list(queryset.values_list("id", flat=True))):
            name = f"Endpoint '{result.endpoint}'"
            if result.model:  # as clients know it, like the API's messages
                name += f" of model '{result.model}'"
            if result.ok:
                self.message_user(
                    request,
                    f"{name}: OK, answered in {result.latency_ms:.0f} ms.",
                    messages.SUCCESS,
                )
            else:
                tips = format_html_join("", "<li>{}</li>", ((tip,) for tip in result.tips))
                diagnosis = format_html(
                    "{} failed ({}): {}<ul>{}</ul>", name, result.error_class, result.message, tips
                )
                self.message_user(request, diagnosis, messages.ERROR)


class RouteEndpointInline(admin.TabularInline):
    model = RouteEndpoint
    extra = 1
    fields = ["position", "endpoint"]
    ordering = ["position"]


@admin.register(Route)
class RouteAdmin(PurgesRepointedModels):
    list_display = ["model_name", "chain_display", "cache_enabled", "semantic_mode", "enabled"]
    fields = [
        "model_name", "description", "enabled", "cache_enabled", "semantic_mode",
        "semantic_threshold", "cache_ttl_s", "timeout_s",
    ]  # fmt: skip
    search_fields = ["model_name"]
    inlines = [RouteEndpointInline]

    @admin.display(description="endpoints (in order)")
    def chain_display(self, route: Route) -> str:
        return " → ".join(link.endpoint.name for link in route.chain.all())

    def get_queryset(self, request: HttpRequest) -> QuerySet[Route]:
        return super().get_queryset(request).prefetch_related("chain__endpoint")

    def save_model(self, request: HttpRequest, route: Route, form: Any, change: bool) -> None:
        was = form.initial.get("semantic_mode", Route.SemanticMode.OFF)
        super().save_model(request, route, form, change)
        if change:  # a new model has no answers stored yet
            switch.mode_changed(route.model_name, was=was, now=route.semantic_mode)


class ServiceKeyForm(forms.ModelForm):
    allowed_models = forms.CharField(
        required=False, help_text="Comma-separated model names; empty = every model."
    )

    class Meta:
        model = ServiceKey
        fields = [
            "name", "allowed_models", "expires_at", "cache_namespace", "rpm", "tpm",
            "max_parallel", "budget_usd", "budget_period", "model_limits",
        ]  # fmt: skip

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initial["allowed_models"] = ", ".join(self.instance.allowed_models or [])

    def clean_allowed_models(self) -> list[str]:
        raw = self.cleaned_data.get("allowed_models") or ""
        return [name.strip() for name in raw.split(",") if name.strip()]


@admin.register(ServiceKey)
class ServiceKeyAdmin(admin.ModelAdmin):
    form = ServiceKeyForm
    list_display = [
        "name", "prefix", "models", "rate_limits", "spend", "budget_left", "expires_at",
        "revoked_at",
    ]  # fmt: skip
    search_fields = ["name", "prefix"]
    readonly_fields = ["prefix", "spend", "budget_left", "revoked_at", "created_at"]
    fieldsets = [
        (None, {"fields": ["name", "prefix", "allowed_models", "expires_at", "cache_namespace"]}),
        (
            "Limits (enforced across every node; empty = not limited)",
            {"fields": ["rpm", "tpm", "max_parallel", "model_limits"]},
        ),
        ("Budget", {"fields": ["budget_usd", "budget_period", "spend", "budget_left"]}),
        (None, {"fields": ["revoked_at", "created_at"]}),
    ]
    actions = ["revoke"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ServiceKey]:
        """With each key's spend in the current day, week, month and in total."""
        return spend.with_period_spend(super().get_queryset(request), timezone.now())

    @admin.display(description="limits")
    def rate_limits(self, key: ServiceKey) -> str:
        parts = [
            f"{value} {unit}"
            for value, unit in ((key.rpm, "rpm"), (key.tpm, "tpm"), (key.max_parallel, "at once"))
            if value
        ]
        if key.model_limits:
            parts.append(f"+ {len(key.model_limits)} per model")
        return ", ".join(parts) or "—"

    @admin.display(description="spend this period")
    def spend(self, key: ServiceKey) -> str:
        if not key.pk:
            return "—"
        return f"{spend.usd(spend.of_period(key))} ({key.budget_period})"

    @admin.display(description="budget left")
    def budget_left(self, key: ServiceKey) -> str:
        if not key.pk or key.budget_usd is None:
            return "—"
        budget = float(key.budget_usd)
        left = max(0.0, budget - spend.of_period(key))
        share = f" ({left / budget:.0%})" if budget else ""
        return f"{spend.usd(left)} of {spend.usd(budget)}{share}"

    @admin.display(description="allowed models")
    def models(self, key: ServiceKey) -> str:
        return ", ".join(key.allowed_models) or "all"

    def save_model(self, request: HttpRequest, obj: ServiceKey, form: Any, change: bool) -> None:
        raw_key = None if change else service_keys.assign_new_key(obj)
        super().save_model(request, obj, form, change)
        if raw_key:
            self.message_user(
                request,
                f"New service key for {obj.name} — copy it now, it is not shown again: {raw_key}",
                messages.WARNING,
            )

    @admin.action(description="Revoke selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ServiceKey]) -> None:
        for key in queryset.filter(revoked_at__isnull=True):
            key.revoke()
        self.message_user(request, "Revoked; the keys stop working within seconds.")
