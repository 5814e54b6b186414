from django.contrib import admin
from django.http import HttpRequest

from monitoring.models import RequestRecord


@admin.register(RequestRecord)
class RequestRecordAdmin(admin.ModelAdmin):
    list_display = [
        "created_at", "request_id", "service_key_name", "model", "endpoint", "outcome",
        "status_code", "latency_ms", "error_class",
    ]  # fmt: skip
    list_filter = ["outcome", "model", "error_class", "created_at"]
    search_fields = ["request_id"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
