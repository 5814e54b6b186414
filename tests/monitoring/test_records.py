"""The request record's type matches the RequestRecord table."""

from datetime import UTC, datetime
from typing import Any

from monitoring.models import RequestRecord
from monitoring.records import RequestRow, request_row


def test_a_row_has_every_column_and_the_tables_defaults() -> None:
    required: dict[str, Any] = {
        "request_id": "r1", "created_at": datetime.now(UTC), "path": "/v1/models",
        "outcome": "success", "status_code": 200, "latency_ms": 1.0,
    }  # fmt: skip
    row: dict[str, Any] = dict(request_row(**required))
    columns = [f for f in RequestRecord._meta.concrete_fields if not f.primary_key]
    assert set(row) == set(RequestRow.__annotations__) == {f.attname for f in columns}
    defaults = {f.attname: f.get_default() for f in columns if f.attname not in required}
    assert {name: row[name] for name in defaults} == defaults
