from typing import Any

import yaml
from django.core.management.base import BaseCommand, CommandParser

from devtools import demo
from routing.importer import import_models


class Command(BaseCommand):
    help = (
        "Route the model 'demo' to a local upstream (and 'demo-broken' to one that always "
        "answers 503, so failures show on /monitoring); print the demo service key (stdout) and "
        "the admin login (stderr), both made on the first run and reused later."
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
        password = demo.ensure_admin()
        if password:
            self.stderr.write(f"{demo.ADMIN_USERNAME} / {password}")
        else:
            self.stderr.write(
                f"{demo.ADMIN_USERNAME}, password unchanged (`make reset-demo` sets a new one)"
            )
        self.stdout.write(demo.ensure_key())
