"""Request records in admin: read-only, filterable, searchable, error tips in full."""

import pytest
from django.test import Client as BrowserClient
from django.utils import timezone

from monitoring.models import RequestRecord

TIPS = ["Check that the API key is set and still valid.", "Check the key's permissions."]


def record(request_id: str, **fields: object) -> RequestRecord:
    defaults: dict[str, object] = {
        "created_at": timezone.now(), "path": "/v1/chat/completions", "model": "chat",
        "outcome": "success", "status_code": 200, "latency_ms": 3.0, "cache_outcome": "miss",
    }  # fmt: skip
    return RequestRecord.objects.create(request_id=request_id, **{**defaults, **fields})


@pytest.fixture
def records(transactional_db: None) -> None:
    record("req-miss")
    record("req-exact", cache_outcome="exact", cache_tier="L1", model="other")
    record("req-semantic", cache_outcome="semantic", cache_tier="L2", cache_similarity=0.97)
    record(
        "req-failed", outcome="upstream_error", status_code=502, cache_outcome="miss",
        error_class="upstream_auth", error_message="chat: endpoint 'a' (h:1) answered 401",
        error_tips=TIPS, endpoint="a", attempts=1,
        attempt_log=[{"endpoint": "a", "upstream_status": 401, "error_class": "upstream_auth",
                      "latency_ms": 4.2}],
    )  # fmt: skip
    record("req-refused", outcome="auth_error", status_code=401, model="", cache_outcome="")


def listed(browser: BrowserClient, query: str = "") -> set[str]:
    page = browser.get(f"/admin/monitoring/requestrecord/{query}")
    assert page.status_code == 200
    ids = {"req-miss", "req-exact", "req-semantic", "req-failed", "req-refused"}
    return {request_id for request_id in ids if f">{request_id}<" in page.content.decode()}


def test_filters_by_cache_kind_outcome_error_class_and_model(
    admin_browser: BrowserClient, records: None
) -> None:
    assert len(listed(admin_browser)) == 5
    assert listed(admin_browser, "?cache=exact") == {"req-exact"}
    assert listed(admin_browser, "?cache=semantic") == {"req-semantic"}
    assert listed(admin_browser, "?cache=none") == {"req-refused"}
    assert listed(admin_browser, "?outcome=upstream_error") == {"req-failed"}
    assert listed(admin_browser, "?error_class=upstream_auth") == {"req-failed"}
    assert listed(admin_browser, "?outcome=success&cache=miss") == {"req-miss"}


def test_search_finds_a_request_by_its_id(admin_browser: BrowserClient, records: None) -> None:
    assert listed(admin_browser, "?q=req-failed") == {"req-failed"}
    assert listed(admin_browser, "?q=req-fail") == set(), "exact ids only: the index is used"


def test_the_record_shows_the_error_tips_in_full_and_is_read_only(
    admin_browser: BrowserClient, records: None
) -> None:
    failed = RequestRecord.objects.get(request_id="req-failed")
    page = admin_browser.get(f"/admin/monitoring/requestrecord/{failed.pk}/change/")
    html = page.content.decode()
    assert page.status_code == 200
    assert all(f"<li>{tip.replace(chr(39), '&#x27;')}</li>" in html for tip in TIPS)
    assert "answered 401" in html and "<td>upstream_auth</td>" in html
    assert 'name="_save"' not in html, "records cannot be edited"
    assert admin_browser.post(page.request["PATH_INFO"], {"status_code": 200}).status_code == 403
    assert admin_browser.get("/admin/monitoring/requestrecord/add/").status_code == 403
