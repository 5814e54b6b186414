import secrets
import time
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from monitoring import metrics, snapshot


@staff_member_required
def dashboard(request: HttpRequest) -> HttpResponse:
    """First paint with current numbers; the page then follows the websocket. The window
    is `?window=` (1h by default); an unknown one is refused, not shown as 1h."""
    window, windows = _window(request), list(snapshot.WINDOWS)
    if window is None:
        refused = {"asked": request.GET["window"], "windows": windows}
        return render(request, "monitoring/bad_window.html", refused, status=400)
    context: dict[str, object] = {
        "snapshot": snapshot.compute(window),
        "windows": windows,
        "window": window,
    }
    return render(request, "monitoring/dashboard.html", context)


def snapshot_api(request: HttpRequest) -> JsonResponse:
    """The dashboard's snapshot as JSON, for a staff session or the metrics token."""
    if not (request.user.is_authenticated and request.user.is_staff) and not _has_token(request):
        return JsonResponse({"error": {"message": "staff login or metrics token required"}},
                            status=401)  # fmt: skip
    window = _window(request)
    if window is None:
        return JsonResponse({"error": {"message": _bad_window(request.GET["window"]),
                                       "param": "window"}}, status=400)  # fmt: skip
    return JsonResponse(snapshot.compute(window))


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
    """200 when the database (and Redis, when configured) answer; 503 naming what does not,
    within READINESS_TIMEOUT_S whatever is down (each check runs in a thread of its own)."""
    probes = {"database": _check_database}
    if settings.REDIS_URL:
        probes["redis"] = _check_redis
    running = {name: _probe_threads.submit(probe) for name, probe in probes.items()}
    deadline = time.monotonic() + READINESS_TIMEOUT_S
    checks: dict[str, str] = {}
    for name, future in running.items():
        try:
            future.result(timeout=max(0.0, deadline - time.monotonic()))
            checks[name] = "ok"
        except TimeoutError:
            checks[name] = f"error: no answer within {READINESS_TIMEOUT_S:g} s"
        except Exception as exc:
            checks[name] = f"error: {type(exc).__name__}"
    ready = all(value == "ok" for value in checks.values())
    payload = {"status": "ok" if ready else "unavailable", **checks}
    return JsonResponse(payload, status=200 if ready else 503)


READINESS_TIMEOUT_S = 0.8
_probe_threads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="readiness")


def _check_database() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        connection.close()  # (this thread's connection goes back to the pool)


def _check_redis() -> None:
    from django_redis import get_redis_connection

    get_redis_connection("default").ping()


def _window(request: HttpRequest) -> str | None:
    """The window asked for (1h when none), or None when it is not one of WINDOWS."""
    window = request.GET.get("window", "1h")
    return window if window in snapshot.WINDOWS else None


def _bad_window(asked: str) -> str:
    return f"Unknown window {asked[:20]!r}: use one of {', '.join(snapshot.WINDOWS)}."


def _has_token(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    sent = request.headers.get("Authorization", "")
    return bool(token) and secrets.compare_digest(sent, f"Bearer {token}")
