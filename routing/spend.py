"""What service keys spent, from KeySpend (one row per key and UTC day, written with the
request records): per budget period, for budgets, /v1/key/info and admin."""

import math
from datetime import datetime

from django.db.models import OuterRef, QuerySet, Subquery, Sum

from routing.key_limits import PERIODS, KeyLimits, period_bounds
from routing.models import KeySpend, ServiceKey

DAY_S = 86400  # KeySpend's day rows


def period_spend(key_id: int, limits: KeyLimits, now: datetime) -> float:
    """USD spent by the key in the budget period holding `now`."""
    start, end = period_bounds(limits.budget_period, now)
    days = KeySpend.objects.filter(service_key_id=key_id, bucket_s=DAY_S, bucket_start__gte=start)
    if end is not None:
        days = days.filter(bucket_start__lt=end)
    return float(days.aggregate(spent=Sum("cost_usd"))["spent"] or 0.0)


def with_period_spend(keys: QuerySet[ServiceKey], now: datetime) -> QuerySet[ServiceKey]:
    """Keys annotated with `spend_<period>` for each period holding `now` (admin lists
    read them all in one query)."""
    annotations = {}
    for period in PERIODS:
        start, _ = period_bounds(period, now)
        spent = (
            KeySpend.objects.filter(
                service_key_id=OuterRef("pk"), bucket_s=DAY_S, bucket_start__gte=start
            )
            .values("service_key_id")
            .annotate(spent=Sum("cost_usd"))
            .values("spent")
        )
        annotations[f"spend_{period}"] = Subquery(spent)
    return keys.annotate(**annotations)


def of_period(key: ServiceKey) -> float:
    """A key's spend in its own budget period (annotated by with_period_spend)."""
    return float(getattr(key, f"spend_{key.budget_period}", None) or 0.0)


def usd(amount: float) -> str:
    """Dollars with the digits that matter: $12,345.00, $1.23, $0.50, $0.000123."""
    if amount == 0 or abs(amount) >= 0.01:
        return f"${amount:,.2f}"
    decimals = 2 - math.floor(math.log10(abs(amount)))  # three significant digits
    return f"${amount:.{decimals}f}"
