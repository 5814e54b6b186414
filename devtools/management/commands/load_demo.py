import secrets
from typing import Any

import yaml
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

from routing.importer import import_models
from routing.service_keys import create_service_key


class Command(BaseCommand):
    help = (
        "Route the model 'demo' to a local upstream (and 'demo-broken' to one that always "
        "answers 503, so failures show on /monitoring), print a service key and an admin login."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--upstream-url", default="http://127.0.0.1:9001/v1")
        parser.add_argument(
            "--semantic", choices=["off", "shadow", "on"], default="on",
            help="semantic cache mode of 'demo' (benchmarks of the pass-through use off)",
        )  # fmt: skip

    def handle(self, *args: Any, **options: Any) -> None:
        upstream = options["upstream_url"].rstrip("/")
        broken = f"{upstream.removesuffix('/v1')}/status/503/v1"  # a fake_upstream mode

        def endpoint(name: str, base_url: str) -> dict[str, Any]:
            return {
                "name": name, "provider": "openai", "base_url": base_url, "model": "demo-echo",
                "timeout_s": 30, "input_cost_per_1m": 0.15, "output_cost_per_1m": 0.60,
            }  # fmt: skip

        models = [
            {
                "name": "demo",
                "cache": {"semantic": options["semantic"]},
                "endpoints": [endpoint("demo-upstream", upstream)],
            },
            {"name": "demo-broken", "endpoints": [endpoint("demo-broken-upstream", broken)]},
        ]
        import_models(yaml.safe_dump({"models": models}))
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
