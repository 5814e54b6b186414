from typing import Any

import pytest
from django.test import Client as BrowserClient


@pytest.fixture
def admin_browser(transactional_db: None, django_user_model: Any) -> BrowserClient:
    """An operator logged in to Django admin."""
    user = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    browser = BrowserClient()
    browser.force_login(user)
    return browser
