from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.dateparse import parse_datetime

from routing.key_limits import PERIODS
from routing.service_keys import create_service_key


class Command(BaseCommand):
    help = "Create a service key; the key is printed once, as the last line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--models", default="", help="comma-separated allow-list")
        parser.add_argument("--expires", default=None, help="ISO datetime, e.g. 2027-01-01T00:00Z")
        parser.add_argument("--rpm", type=int, help="requests per minute")
        parser.add_argument("--tpm", type=int, help="tokens per minute (prompt + completion)")
        parser.add_argument("--max-parallel", type=int, help="requests at once")
        parser.add_argument("--budget", help="spend allowed per budget period, in USD")
        parser.add_argument("--budget-period", choices=PERIODS, default="monthly")

    def handle(self, *args: Any, **options: Any) -> None:
        models = [m.strip() for m in options["models"].split(",") if m.strip()]
        expires_at = parse_datetime(options["expires"]) if options["expires"] else None
        try:
            key, raw_key = create_service_key(
                options["name"],
                allowed_models=models,
                expires_at=expires_at,
                rpm=options["rpm"],
                tpm=options["tpm"],
                max_parallel=options["max_parallel"],
                budget_usd=options["budget"],
                budget_period=options["budget_period"],
            )
        except ValidationError as exc:
            problems = "; ".join(f"{f}: {' '.join(e)}" for f, e in exc.message_dict.items())
            raise CommandError(problems) from None
        self.stderr.write(f"service key '{key.name}' created; store it now, it is not shown again:")
        self.stdout.write(raw_key)
