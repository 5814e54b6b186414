"""Request records in admin: read-only, and usable at tens of millions of rows: no filter
asks the table for its distinct values, no date drill-down, search by request id uses
its index, and the unfiltered list shows Postgres's row estimate instead of counting."""

from typing import Any

from django.contrib import admin
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from beastmode.lib.errors import KINDS
from monitoring.models import RequestRecord
from routing.models import Route


class ModelFilter(admin.SimpleListFilter):
    title = "model"
    parameter_name = "model"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        names = Route.objects.order_by("model_name").values_list("model_name", flat=True)
        return [(name, name) for name in names]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(model=self.value()) if self.value() else queryset


class CacheKindFilter(admin.SimpleListFilter):
    title = "cache"
    parameter_name = "cache"
    _KINDS = {"miss": "miss", "exact": "exact hit", "semantic": "semantic hit",
              "shadow": "shadow (would-be semantic hit)", "none": "not looked up"}  # fmt: skip

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return list(self._KINDS.items())

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() not in self._KINDS:
            return queryset
        return queryset.filter(cache_outcome="" if self.value() == "none" else self.value())


class ErrorClassFilter(admin.SimpleListFilter):
    title = "error class"
    parameter_name = "error_class"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(name, name) for name in sorted(KINDS)]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(error_class=self.value()) if self.value() else queryset


class EstimatedCountPaginator(Paginator):
    """Counting ten million rows takes seconds; without filters, Postgres's estimate will do."""

    @cached_property
    def count(self) -> int:
        query = getattr(self.object_list, "query", None)
        if connection.vendor == "postgresql" and query is not None and not query.where:
            with connection.cursor() as cursor:
                table = RequestRecord._meta.db_table
                cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE relname = %s", [table])
                row = cursor.fetchone()
            if row and row[0] > 100_000:
                return int(row[0])
        return super().count


@admin.register(RequestRecord)
class RequestRecordAdmin(admin.ModelAdmin):
    # What a glance needs first, in short columns (in view at 1400 px beside both sidebars);
    # the long names and ids after them.
    list_display = [
        "when", "outcome", "status", "latency", "cache", "tier", "model", "error_class",
        "endpoint", "service_key_name", "request_id",
    ]  # fmt: skip
    list_filter = [
        ModelFilter, "outcome", CacheKindFilter, ErrorClassFilter, "created_at", "stream",
        "is_warming",
    ]  # fmt: skip
    search_fields = ["request_id"]
    search_help_text = "Exact request id (the x-request-id header)."
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    readonly_fields = ["tips", "attempt_table"]
    fieldsets = [
        (None, {"fields": [
            "request_id", "created_at", "method", "path", "service_key_name", "model",
            "endpoint", "stream", "is_async_job", "is_warming", "outcome", "status_code",
        ]}),
        ("Error", {"fields": ["error_class", "error_message", "tips"]}),
        ("Routing", {"fields": ["attempts", "fallbacks", "attempt_table"]}),
        ("Latency and cost", {"fields": [
            "latency_ms", "upstream_latency_ms", "overhead_ms", "tokens_in", "tokens_out",
            "cost_usd",
        ]}),
        ("Cache", {"fields": [
            "cache_outcome", "cache_tier", "cache_similarity", "cache_entry_key",
            "saved_tokens_in", "saved_tokens_out", "cost_saved_usd",
        ]}),
    ]  # fmt: skip

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        return (queryset.filter(request_id=term) if term else queryset), False

    @admin.display(description="when", ordering="created_at")
    def when(self, record: RequestRecord) -> str:
        local = timezone.localtime(record.created_at)  # the date over the time, each unbroken
        return format_html(
            '<span class="nowrap">{}</span> {}', f"{local:%Y-%m-%d}", f"{local:%H:%M:%S}"
        )

    @admin.display(description="status", ordering="status_code")
    def status(self, record: RequestRecord) -> int:
        return record.status_code

    @admin.display(description="latency", ordering="latency_ms")
    def latency(self, record: RequestRecord) -> str:
        return f"{record.latency_ms:,.0f}\u00a0ms"

    @admin.display(description="cache", ordering="cache_outcome")
    def cache(self, record: RequestRecord) -> str:
        return record.cache_outcome

    @admin.display(description="tier", ordering="cache_tier")
    def tier(self, record: RequestRecord) -> str:
        return record.cache_tier

    @admin.display(description="what to do")
    def tips(self, record: RequestRecord) -> str:
        if not record.error_tips:
            return "–"
        items = format_html_join("", "<li>{}</li>", ((tip,) for tip in record.error_tips))
        return format_html("<ul>{}</ul>", items)

    @admin.display(description="attempts, in order")
    def attempt_table(self, record: RequestRecord) -> str:
        if not record.attempt_log:
            return "–"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (a.get("endpoint"), a.get("upstream_status"), a.get("error_class") or "ok",
                 a.get("latency_ms"))
                for a in record.attempt_log
            ),
        )  # fmt: skip
        head = mark_safe("<tr><th>endpoint</th><th>status</th><th>result</th><th>ms</th></tr>")
        return format_html("<table>{}{}</table>", head, rows)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
