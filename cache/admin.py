from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from beastmode.lib import changes
from cache import keys, purge
from cache.models import CacheNamespace, SemanticPair


@admin.register(CacheNamespace)
class CacheNamespaceAdmin(admin.ModelAdmin):
    list_display = ["name", "description", "entries_namespace"]

    @admin.display(description="cache entries' namespace")
    def entries_namespace(self, namespace: CacheNamespace) -> str:
        return keys.namespace_for(key_hash_prefix="", shared_namespace_id=namespace.pk)


@admin.register(SemanticPair)
class SemanticPairAdmin(admin.ModelAdmin):
    list_display = ["created_at", "model", "similarity", "served", "marked_false", "asked_text"]
    list_filter = ["model", "served", "marked_false"]
    search_fields = ["request_id", "asked_text", "cached_text"]
    readonly_fields = [f.name for f in SemanticPair._meta.fields]
    actions = ["mark_false", "unmark_false"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Mark as a false hit (evicts the cached answer, never matched again)")
    def mark_false(self, request: HttpRequest, queryset: QuerySet[SemanticPair]) -> None:
        keys = list(queryset.values_list("cached_key", flat=True))
        queryset.update(marked_false=True)  # before the purge: its registry bump spreads both
        purge.purge_keys(keys)
        self.message_user(
            request, "Marked; the cached answers were evicted and these pairs never match again."
        )

    @admin.action(description="Unmark: the asked text may match the cached text again")
    def unmark_false(self, request: HttpRequest, queryset: QuerySet[SemanticPair]) -> None:
        queryset.update(marked_false=False)
        changes.announce()
        self.message_user(request, "Unmarked.")
