from django.contrib import admin
from django.urls import path

from monitoring import views as monitoring_views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("metrics", monitoring_views.prometheus_metrics, name="metrics"),
    path("health/liveliness", monitoring_views.liveliness, name="liveliness"),
    path("health/readiness", monitoring_views.readiness, name="readiness"),
]
