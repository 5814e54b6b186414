import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

from routing.importer import import_models
from routing.keys import create_service_key


class Command(BaseCommand):
    help = "Route the model 'demo' to a local upstream, print a service key and an admin login."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--upstream-url", default="http://127.0.0.1:9001/v1")

    def handle(self, *args: Any, **options: Any) -> None:
        import_models(
            "models:\n"
            "  - name: demo\n"
            "    endpoints:\n"
            "      - name: demo-upstream\n"
            "        provider: openai\n"
            f"        base_url: {options['upstream_url']}\n"
            "        model: demo-echo\n"
            "        timeout_s: 30\n"
            "        input_cost_per_1m: 0.15\n"
            "        output_cost_per_1m: 0.60\n"
        )
        password = secrets.token_urlsafe(12)
        user, _ = get_user_model().objects.get_or_create(
            username="admin", defaults={"is_staff": True, "is_superuser": True}
        )
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        self.stderr.write(f"admin login: admin / {password}")
        _, raw_key = create_service_key("demo")
        self.stdout.write(raw_key)
