from django.contrib import admin
from django.templatetags.static import static
from django.urls import path
from django.views.generic import RedirectView

from beastmode import views
from monitoring import views as monitoring_views

admin.site.site_url = "/monitoring"  # admin's "View site" (our header calls it Dashboard)
admin.site.site_header = admin.site.site_title = "BeastMode admin"

urlpatterns = [
    path("", views.home, name="home"),
    path("admin/", admin.site.urls),
    # Browsers ask for it on every page (admin and login included): an icon, not a 404.
    path("favicon.ico", RedirectView.as_view(url=static("favicon.svg"), permanent=True)),
    path("monitoring", monitoring_views.dashboard, name="monitoring"),
    path("monitoring/", RedirectView.as_view(url="/monitoring", query_string=True)),
    path("monitoring/api/snapshot", monitoring_views.snapshot_api, name="monitoring-snapshot"),
    path("metrics", monitoring_views.prometheus_metrics, name="metrics"),
    path("health/liveliness", monitoring_views.liveliness, name="liveliness"),
    path("health/readiness", monitoring_views.readiness, name="readiness"),
]
