"""The dashboard's view of service keys: who spent most in the window, who is near their
budget. Read from KeySpend (per key and minute, hour or day, written with the records)."""

from datetime import datetime
from typing import TypedDict

from django.db.models import QuerySet, Sum

from routing import spend
from routing.models import KeySpend, ServiceKey

MAX_KEYS = 10
NEAR_BUDGET = 0.8  # a key that has used this share of its budget is shown


class KeyRow(TypedDict):
    name: str
    prefix: str
    requests: int | None  # in the window (None: not counted for this list)
    cost_usd: float  # in the window, or in the budget's period
    budget_usd: float | None
    budget_used: float | None  # share of the budget spent in its period


def top_spenders(since: datetime, now: datetime, bucket_s: int) -> list[KeyRow]:
    """The keys that spent most in the window (whole `bucket_s` rollups from `since`)."""
    totals = (
        KeySpend.objects.filter(bucket_s=bucket_s, bucket_start__gte=since)
        .values("service_key_id")
        .annotate(requests=Sum("requests"), cost_usd=Sum("cost_usd"))
        .filter(cost_usd__gt=0)
        .order_by("-cost_usd", "service_key_id")[:MAX_KEYS]
    )
    by_id = {row["service_key_id"]: row for row in totals}
    keys = _with_spend(ServiceKey.objects.filter(id__in=by_id), now)
    return [
        _row(keys.get(key_id), key_id, row["requests"], row["cost_usd"])
        for key_id, row in by_id.items()
    ]


def near_budget(now: datetime) -> list[KeyRow]:
    """Keys not revoked that have spent NEAR_BUDGET or more of their period's budget."""
    keys = _with_spend(ServiceKey.objects.filter(budget_usd__gt=0, revoked_at=None), now)
    rows = [_row(key, key.id, None, spend.of_period(key)) for key in keys.values()]
    near = [row for row in rows if (row["budget_used"] or 0) >= NEAR_BUDGET]
    return sorted(near, key=lambda row: -(row["budget_used"] or 0))[:MAX_KEYS]


def _with_spend(keys: QuerySet[ServiceKey], now: datetime) -> dict[int, ServiceKey]:
    return {key.id: key for key in spend.with_period_spend(keys, now)}


def _row(key: ServiceKey | None, key_id: int, requests: int | None, cost_usd: float) -> KeyRow:
    budget = float(key.budget_usd) if key is not None and key.budget_usd is not None else None
    return KeyRow(
        name=key.name if key is not None else f"(deleted key {key_id})",
        prefix=key.prefix if key is not None else "",
        requests=requests,
        cost_usd=round(cost_usd, 9),
        budget_usd=budget,
        budget_used=round(spend.of_period(key) / budget, 4) if key is not None and budget else None,
    )
