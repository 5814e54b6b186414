"""The dashboard's keys: top spenders in the window, keys near their budget; from the
spend the record writer rolls up per key."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from monitoring import key_spend, recorder
from monitoring.records import RequestRow, request_row
from routing.service_keys import create_service_key

pytestmark = [pytest.mark.embedded, pytest.mark.django_db(transaction=True)]

NOW = datetime.now(UTC)


def spent(key_id: int, usd: float, minutes_ago: float, n: int = 1) -> list[RequestRow]:
    return [
        request_row(
            request_id=f"spend-{key_id}-{minutes_ago}-{i}",
            created_at=NOW - timedelta(minutes=minutes_ago),
            path="/v1/chat/completions",
            outcome="success",
            status_code=200,
            latency_ms=1.0,
            service_key_id=key_id,
            cost_usd=usd / n,
        )
        for i in range(n)
    ]


def write(*batches: list[RequestRow]) -> None:
    recorder._pending.extend(recorder._pack(r) for batch in batches for r in batch)
    recorder.flush()


def names(rows: list[Any]) -> list[str]:
    return [row["name"] for row in rows]


def test_top_spenders_are_the_keys_that_spent_most_in_the_window() -> None:
    big, _ = create_service_key("big", budget_usd="100")
    small, _ = create_service_key("small")
    before, _ = create_service_key("spent-before-the-window")
    write(spent(big.id, 3.0, 5, n=3), spent(small.id, 0.5, 10), spent(before.id, 50, 90))

    rows = key_spend.top_spenders(NOW - timedelta(hours=1), NOW, 60)
    assert names(rows) == ["big", "small"]
    assert (rows[0]["requests"], rows[0]["cost_usd"]) == (3, pytest.approx(3.0))
    assert (rows[0]["budget_usd"], rows[0]["budget_used"]) == (100.0, pytest.approx(0.03))
    day = key_spend.top_spenders(NOW - timedelta(hours=24), NOW, 3600)
    assert names(day)[0] == "spent-before-the-window"


def test_keys_near_their_budget_in_their_own_period_come_first_by_share() -> None:
    almost, _ = create_service_key("almost", budget_usd="10", budget_period="total")
    over, _ = create_service_key("over", budget_usd="1", budget_period="daily")
    fine, _ = create_service_key("fine", budget_usd="10", budget_period="daily")
    revoked, _ = create_service_key("revoked", budget_usd="1")
    revoked.revoke()
    write(
        spent(almost.id, 9, 1), spent(over.id, 2, 1), spent(fine.id, 1, 1), spent(revoked.id, 5, 1)
    )

    rows = key_spend.near_budget(NOW)
    assert names(rows) == ["over", "almost"]
    assert [row["budget_used"] for row in rows] == [pytest.approx(2.0), pytest.approx(0.9)]
