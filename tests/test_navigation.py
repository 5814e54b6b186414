"""Where an operator lands: `/`, `/monitoring/`, and the admin header's way to the dashboard."""

import pytest
from django.test import Client as BrowserClient

pytestmark = pytest.mark.embedded


@pytest.mark.django_db
def test_the_root_sends_a_visitor_to_the_admin_login_and_back() -> None:
    response = BrowserClient().get("/")
    assert response.status_code == 302
    assert response["Location"] == "/admin/login/?next=/"


def test_the_root_sends_staff_to_the_dashboard(admin_browser: BrowserClient) -> None:
    response = admin_browser.get("/", follow=True)
    assert response.redirect_chain == [("/monitoring", 302)]
    assert response.status_code == 200


@pytest.mark.django_db
def test_a_trailing_slash_on_monitoring_keeps_the_query_string() -> None:
    response = BrowserClient().get("/monitoring/?window=24h")
    assert response.status_code == 302
    assert response["Location"] == "/monitoring?window=24h"


def test_the_admin_header_links_to_the_dashboard(admin_browser: BrowserClient) -> None:
    page = admin_browser.get("/admin/").content.decode()
    assert '<a href="/monitoring" id="dashboard-link">Dashboard</a>' in page
    assert "View site" not in page  # the same link: named once, for what it is
