"""A service key's limits (set in admin, `create_service_key`, `import_models`) and the
budget periods they reset on. Plain values: the registry holds them, the gateway
enforces them (gateway/limits.py)."""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

PERIODS = ("daily", "weekly", "monthly", "total")
MODEL_LIMIT_NAMES = ("rpm", "tpm", "max_parallel")


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Requests and tokens per minute and requests at once; None: not limited."""

    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None

    def __bool__(self) -> bool:
        return any(limit is not None for limit in (self.rpm, self.tpm, self.max_parallel))


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """Everything a key is limited by: its own rates, per-model rates, a spend budget."""

    rates: RateLimits = RateLimits()
    per_model: dict[str, RateLimits] = field(default_factory=dict)
    budget_usd: float | None = None
    budget_period: str = "monthly"

    def __bool__(self) -> bool:
        return bool(self.rates or self.per_model or self.budget_usd is not None)

    def for_model(self, model: str) -> RateLimits:
        return self.per_model.get(model, RateLimits())


def key_limits(
    *,
    rpm: int | None,
    tpm: int | None,
    max_parallel: int | None,
    budget_usd: Any,
    budget_period: str,
    model_limits: dict[str, dict[str, int]] | None,
) -> KeyLimits | None:
    """A key row's limits; None when it has none (the hot path then checks nothing)."""
    limits = KeyLimits(
        rates=RateLimits(rpm, tpm, max_parallel),
        per_model={
            model: RateLimits(**{name: values.get(name) for name in MODEL_LIMIT_NAMES})
            for model, values in (model_limits or {}).items()
        },
        budget_usd=float(budget_usd) if budget_usd is not None else None,
        budget_period=budget_period,
    )
    return limits or None


def model_limits_errors(value: Any) -> list[str]:
    """What is wrong with a `model_limits` value ({model: {rpm, tpm, max_parallel}})."""
    if not isinstance(value, dict):
        return ["must be an object: {model name: {rpm, tpm, max_parallel}}"]
    errors = []
    for model, limits in value.items():
        if not isinstance(limits, dict) or not limits:
            errors.append(f"{model!r}: give one or more of {', '.join(MODEL_LIMIT_NAMES)}")
            continue
        for name, limit in limits.items():
            if name not in MODEL_LIMIT_NAMES:
                errors.append(f"{model!r}: unknown limit {name!r} ({', '.join(MODEL_LIMIT_NAMES)})")
            elif isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                errors.append(f"{model!r}: {name} must be a whole number of 1 or more")
    return errors


def period_bounds(period: str, now: datetime) -> tuple[datetime, datetime | None]:
    """The budget period holding `now` (UTC): its start and the next period's start (when
    the budget resets; None for `total`, which never does)."""
    now = now.astimezone(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        return day, day + timedelta(days=1)
    if period == "weekly":
        start = day - timedelta(days=day.weekday())  # Monday
        return start, start + timedelta(days=7)
    if period == "monthly":
        start = day.replace(day=1)
        following = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
        return start, following
    return datetime(1970, 1, 1, tzinfo=UTC), None
