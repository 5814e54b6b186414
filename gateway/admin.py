"""Admin pages that join the apps below: warm-up prompts (a key's prompts), cache entries
(named by the key or shared namespace that owns them)."""

from django.contrib import admin, messages
from django.db.models import CharField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Cast, Concat, Substr
from django.http import HttpRequest

from beastmode.lib import dispatch
from cache import keys, purge
from cache.models import CacheEntry, CacheNamespace
from gateway import tasks
from gateway.models import WarmupPrompt
from routing.models import ServiceKey


@admin.register(WarmupPrompt)
class WarmupPromptAdmin(admin.ModelAdmin):
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
        "model", "namespace_display", "hits", "size_bytes", "created_at", "expires_at"
    ]  # fmt: skip
    list_filter = ["model", "namespace"]
    search_fields = ["key", "model", "namespace"]
    readonly_fields = [f.name for f in CacheEntry._meta.fields]
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
