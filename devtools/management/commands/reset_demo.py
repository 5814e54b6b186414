from typing import Any

from django.core.management.base import BaseCommand

from devtools import demo


class Command(BaseCommand):
    help = (
        "Give the demo admin login a new password and replace the demo service key "
        "(the old one is revoked); print both."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        password = demo.ensure_admin(reset=True)
        raw_key = demo.ensure_key(reset=True)
        self.stdout.write(f"admin login: {demo.ADMIN_USERNAME} / {password}")
        self.stdout.write(f"service key: {raw_key}  (the old demo key is revoked)")
