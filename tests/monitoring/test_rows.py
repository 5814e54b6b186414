"""The writer threads' own row writing must store what Django's ORM would have stored."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from django.db.backends.sqlite3.base import DatabaseWrapper

from beastmode.lib.rows import sqlite_datetime


@pytest.mark.embedded
@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 11, 24, 12, 30, 5, 123456, tzinfo=UTC),
        datetime(2026, 11, 24, 12, 30, 5, tzinfo=UTC),  # no fraction: Django's text has none
        datetime(2026, 11, 24, 23, 30, 5, 1, tzinfo=timezone(timedelta(hours=-5))),  # next day
        None,
    ],
)
def test_sqlite_datetimes_are_the_text_djangos_sqlite_backend_stores(
    moment: datetime | None,
) -> None:
    sqlite = DatabaseWrapper({"NAME": ":memory:", "TIME_ZONE": None, "OPTIONS": {}})
    django_own = sqlite.ops.adapt_datetimefield_value(moment)
    assert sqlite_datetime(moment) == django_own
