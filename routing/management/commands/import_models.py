from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from routing.importer import ImportError_, import_models


class Command(BaseCommand):
    help = "Create or update models, routes and endpoints from a YAML file (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            summary = import_models(options["file"].read_text())
        except (OSError, ImportError_) as exc:
            raise CommandError(str(exc)) from None
        for label in summary.created:
            self.stdout.write(f"created {label}")
        for label in summary.updated:
            self.stdout.write(f"updated {label}")
        for repoint in summary.purged:
            self.stdout.write(
                f"purged the cached answers of model {repoint.model_name}: {repoint.reason}"
            )
        for name, raw_key in summary.new_keys.items():
            self.stdout.write(f"service key {name!r}, shown once: {raw_key}")
        self.stdout.write(
            f"{len(summary.created)} created, {len(summary.updated)} updated, "
            f"{len(summary.unchanged)} unchanged"
        )
