"""Admin pages that join the apps below: warm-up prompts (a key's prompts), cache entries
(named by the key or shared namespace that owns them)."""

import math
from array import array
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import CharField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Cast, Concat, Substr
from django.http import HttpRequest
from django.utils.text import Truncator

from beastmode.lib import dispatch
from cache import keys, purge
from cache.models import CacheEntry, CacheNamespace
from gateway import tasks
from gateway.models import WarmupPrompt
from routing.models import Route, ServiceKey


class _JSONOrEmpty(forms.JSONField):
    """A JSON field that starts empty on a new form (Django's shows `null`)."""

    def prepare_value(self, value: Any) -> Any:
        return "" if value is None else super().prepare_value(value)


class WarmupPromptForm(forms.ModelForm):
    model = forms.ChoiceField(help_text="a model of Routes")
    messages = _JSONOrEmpty(
        help_text=WarmupPrompt._meta.get_field("messages").help_text,
        widget=forms.Textarea(
            attrs={"rows": 4, "placeholder": '[{"role": "user", "content": "Opening hours?"}]'}
        ),
    )

    class Meta:
        model = WarmupPrompt
        fields = ["service_key", "model", "messages", "parameters", "enabled"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        names = list(Route.objects.order_by("model_name").values_list("model_name", flat=True))
        if self.instance.model and self.instance.model not in names:
            names.append(self.instance.model)  # removed since: still opens, refused on save
        model_field = self.fields["model"]
        assert isinstance(model_field, forms.ChoiceField)
        model_field.choices = [("", "---------"), *((name, name) for name in names)]


@admin.register(WarmupPrompt)
class WarmupPromptAdmin(admin.ModelAdmin):
    form = WarmupPromptForm
    list_display = ["model", "messages", "service_key", "enabled", "last_warmed_at", "last_result"]
    list_filter = ["model", "enabled"]
    actions = ["warm_now"]

    @admin.action(description="Warm now (in a Celery worker)")
    def warm_now(self, request: HttpRequest, queryset: QuerySet[WarmupPrompt]) -> None:
        for prompt_id in queryset.values_list("id", flat=True):
            dispatch.enqueue(tasks.warm_prompt, prompt_id)
        self.message_user(request, f"Warming {queryset.count()} prompts.", messages.SUCCESS)


@admin.register(CacheEntry)
class CacheEntryAdmin(admin.ModelAdmin):
    list_display = [
        "model", "prompt_preview", "hits", "namespace_display", "size_bytes", "created_at",
        "expires_at",
    ]  # fmt: skip
    list_filter = ["model", "namespace"]
    search_fields = ["key", "model", "namespace"]
    # The embedding is float32 bytes: summed up, not printed.
    readonly_fields = [
        *(f.name for f in CacheEntry._meta.fields if f.name != "embedding"), "embedding_summary"
    ]  # fmt: skip
    actions = ["purge_entries", "purge_models", "purge_namespaces"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    # Deleting a row would leave its answer served from L1, L2 and the semantic index of
    # every process: in admin, deleting an entry is purging it.
    def delete_model(self, request: HttpRequest, obj: CacheEntry) -> None:
        purge.purge(key=obj.key)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[CacheEntry]) -> None:
        purge.purge_keys(queryset.values_list("key", flat=True))

    def get_queryset(self, request: HttpRequest) -> QuerySet[CacheEntry]:
        # Namespaces are stored by what is never reused (the namespace's id, a prefix of the
        # key's hash: cache.keys.namespace_for); the list shows their names too, in one query.
        shared = CacheNamespace.objects.annotate(
            namespace=Concat(Value(keys.SHARED_NAMESPACE_PREFIX), Cast("pk", CharField()))
        ).filter(namespace=OuterRef("namespace"))
        own = ServiceKey.objects.annotate(
            namespace=Concat(
                Value(keys.OWN_NAMESPACE_PREFIX),
                Substr("key_hash", 1, keys.OWN_NAMESPACE_HASH_CHARS),
            )
        ).filter(namespace=OuterRef("namespace"))
        return (
            super()
            .get_queryset(request)
            .annotate(
                shared_name=Subquery(shared.values("name")[:1]),
                key_name=Subquery(own.values("name")[:1]),
            )
        )

    @admin.display(description="prompt")
    def prompt_preview(self, entry: CacheEntry) -> str:
        return Truncator(" ".join(entry.prompt_text.split())).chars(60)  # (admin escapes it)

    @admin.display(description="embedding")
    def embedding_summary(self, entry: CacheEntry) -> str:
        if entry.embedding is None:
            return "none (not embedded: exact matching only)"
        vector = array("f", bytes(entry.embedding))
        norm = math.sqrt(sum(x * x for x in vector))
        return f"{len(vector)} dimensions (float32), norm {norm:.3f}"

    @admin.display(description="namespace", ordering="namespace")
    def namespace_display(self, entry: CacheEntry) -> str:
        name = getattr(entry, "shared_name", None) or getattr(entry, "key_name", None)
        return f"{entry.namespace} ({name})" if name else entry.namespace

    @admin.action(description="Purge the selected entries")
    def purge_entries(self, request: HttpRequest, queryset: QuerySet[CacheEntry]) -> None:
        count = purge.purge_keys(queryset.values_list("key", flat=True))
        self.message_user(request, f"Purged {count} entries from every tier.", messages.SUCCESS)

    @admin.action(description="Purge every entry of the selected entries' models")
    def purge_models(self, request: HttpRequest, queryset: QuerySet[CacheEntry]) -> None:
        models = set(queryset.values_list("model", flat=True))
        count = sum(purge.purge(model=model) for model in models)
        self.message_user(request, f"Purged {count} entries of {', '.join(sorted(models))}.")

    @admin.action(description="Purge every entry of the selected entries' namespaces")
    def purge_namespaces(self, request: HttpRequest, queryset: QuerySet[CacheEntry]) -> None:
        namespaces = set(queryset.values_list("namespace", flat=True))
        count = sum(purge.purge(namespace=namespace) for namespace in namespaces)
        self.message_user(request, f"Purged {count} entries of {', '.join(sorted(namespaces))}.")
