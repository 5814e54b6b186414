from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils.dateparse import parse_datetime

from routing.service_keys import create_service_key


class Command(BaseCommand):
    help = "Create a service key; the key is printed once, as the last line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--models", default="", help="comma-separated allow-list")
        parser.add_argument("--expires", default=None, help="ISO datetime, e.g. 2027-01-01T00:00Z")

    def handle(self, *args: Any, **options: Any) -> None:
        models = [m.strip() for m in options["models"].split(",") if m.strip()]
        expires_at = parse_datetime(options["expires"]) if options["expires"] else None
        key, raw_key = create_service_key(
            options["name"], allowed_models=models, expires_at=expires_at
        )
        self.stderr.write(f"service key '{key.name}' created; store it now, it is not shown again:")
        self.stdout.write(raw_key)
