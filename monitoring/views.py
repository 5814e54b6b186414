import secrets

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from monitoring import metrics, snapshot


@staff_member_required
def dashboard(request: HttpRequest) -> HttpResponse:
    """First paint with current numbers; the page then follows the websocket."""
    window = _window(request)
    return render(
        request,
        "monitoring/dashboard.html",
        {"snapshot": snapshot.compute(window), "windows": list(snapshot.WINDOWS), "window": window},
    )


def snapshot_api(request: HttpRequest) -> JsonResponse:
    """The dashboard's snapshot as JSON, for a staff session or the metrics token."""
    if not (request.user.is_authenticated and request.user.is_staff) and not _has_token(request):
        return JsonResponse({"error": {"message": "staff login or metrics token required"}},
                            status=401)  # fmt: skip
    return JsonResponse(snapshot.compute(_window(request)))


def prometheus_metrics(request: HttpRequest) -> HttpResponse:
    if settings.METRICS_TOKEN and not _has_token(request):
        return HttpResponse("metrics token required\n", status=401, content_type="text/plain")
    return HttpResponse(
        metrics.exposition(),
        content_type="text/plain; version=0.0.4; charset=utf-8",
    )


def liveliness(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def readiness(request: HttpRequest) -> JsonResponse:
    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    if settings.REDIS_URL:
        try:
            from django_redis import get_redis_connection

            get_redis_connection("default").ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"error: {type(exc).__name__}"
    ready = all(value == "ok" for value in checks.values())
    payload = {"status": "ok" if ready else "unavailable", **checks}
    return JsonResponse(payload, status=200 if ready else 503)


def _window(request: HttpRequest) -> str:
    window = request.GET.get("window", "1h")
    return window if window in snapshot.WINDOWS else "1h"


def _has_token(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    sent = request.headers.get("Authorization", "")
    return bool(token) and secrets.compare_digest(sent, f"Bearer {token}")
