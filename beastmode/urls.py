from django.contrib import admin
from django.urls import path

from monitoring import views as monitoring_views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("monitoring", monitoring_views.dashboard, name="monitoring"),
    path("monitoring/api/snapshot", monitoring_views.snapshot_api, name="monitoring-snapshot"),
    path("metrics", monitoring_views.prometheus_metrics, name="metrics"),
    path("health/liveliness", monitoring_views.liveliness, name="liveliness"),
    path("health/readiness", monitoring_views.readiness, name="readiness"),
]
