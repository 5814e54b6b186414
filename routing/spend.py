"""What service keys spent, from KeySpend (one row per key and UTC day, written with the
request records): per budget period, for budgets, /v1/key/info and admin."""

from datetime import datetime

from django.db.models import OuterRef, QuerySet, Subquery, Sum

from routing.key_limits import PERIODS, KeyLimits, period_bounds
from routing.models import KeySpend, ServiceKey


def period_spend(key_id: int, limits: KeyLimits, now: datetime) -> float:
    """USD spent by the key in the budget period holding `now`."""
    start, end = period_bounds(limits.budget_period, now)
    days = KeySpend.objects.filter(service_key_id=key_id, day__gte=start.date())
    if end is not None:
        days = days.filter(day__lt=end.date())
    return float(days.aggregate(spent=Sum("cost_usd"))["spent"] or 0.0)


def with_period_spend(keys: QuerySet[ServiceKey], now: datetime) -> QuerySet[ServiceKey]:
    """Keys annotated with `spend_<period>` for each period holding `now` (admin lists
    read them all in one query)."""
    annotations = {}
    for period in PERIODS:
        start, _ = period_bounds(period, now)
        spent = (
            KeySpend.objects.filter(service_key_id=OuterRef("pk"), day__gte=start.date())
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
    """Dollars with the digits that matter: $0.000123, $1.23, $12,345.00."""
    if amount == 0:
        return "$0"
    if abs(amount) < 1:
        return f"${amount:.3g}" if abs(amount) >= 0.001 else f"${amount:.2e}"
    return f"${amount:,.2f}"
