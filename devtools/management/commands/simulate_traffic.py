import os
import random
import secrets
import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError
from django.utils import timezone

from devtools import traffic, traffic_mix
from routing.service_keys import create_service_key


class Command(BaseCommand):
    help = (
        "Send realistic traffic (cache hits and misses, streams, failures) through a running "
        "BeastMode's HTTP API, e.g. to watch /monitoring move."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rps", type=float, default=5.0, help="requests per second")
        parser.add_argument("--duration", type=float, default=60.0, help="seconds to send for")
        host, port = os.environ.get("HOST", "127.0.0.1"), os.environ.get("PORT", "8000")
        parser.add_argument(
            "--base-url", default=f"http://{host}:{port}/v1", help="default: as `make run` serves"
        )
        parser.add_argument(
            "--key",
            default=os.environ.get("BEASTMODE_KEY", ""),
            help="service key (default: $BEASTMODE_KEY; without either, a throw-away key is "
            "created in this installation's database)",
        )
        parser.add_argument("--model", default="demo")
        parser.add_argument(
            "--failing-model",
            default=None,
            help="a model whose upstream fails, for upstream errors in the mix (default: "
            "'demo-broken', which load_demo makes, when --model is demo; '' for none)",
        )
        parser.add_argument("--seed", type=int, help="replay the same requests (default: random)")
        parser.add_argument("--concurrency", type=int, default=8, help="requests in flight, max")

    def handle(self, *args: Any, **options: Any) -> None:
        rps, duration_s = options["rps"], options["duration"]
        if rps <= 0 or duration_s <= 0 or options["concurrency"] < 1:
            raise CommandError("--rps, --duration and --concurrency must be positive.")
        base_url = options["base_url"].rstrip("/")
        failing_model = options["failing_model"]
        if failing_model is None:
            failing_model = "demo-broken" if options["model"] == "demo" else ""
        models = [options["model"], *filter(None, [failing_model])]
        seed = options["seed"] if options["seed"] is not None else random.randrange(10**6)
        run_tag = secrets.token_hex(3)
        key = options["key"]
        try:
            traffic.check_reachable(base_url)
            if key:
                self._check_access(base_url, key, models, run_tag, key_is_new=False)
            else:
                key = self._throwaway_key(duration_s)
                self._check_access(base_url, key, models, run_tag, key_is_new=True)
        except KeyboardInterrupt:
            raise CommandError("Interrupted before sending anything.") from None
        except traffic.TrafficError as exc:
            raise CommandError(str(exc)) from None

        self.stdout.write(
            f"Sending {rps:g} requests/s for {duration_s:g} s to {base_url} (model "
            f"{', '.join(models)}); Ctrl-C stops."
        )
        self.stdout.flush()
        report = traffic.run(
            base_url=base_url,
            key=key,
            plan=traffic_mix.plan_requests(
                model=options["model"], failing_model=failing_model, seed=seed
            ),
            rps=rps,
            duration_s=duration_s,
            concurrency=options["concurrency"],
            run_tag=run_tag,
            progress=self._progress,
        )
        for line in traffic.summary_lines(report, seed=seed):
            self.stdout.write(line)

    def _check_access(
        self, base_url: str, key: str, models: list[str], run_tag: str, *, key_is_new: bool
    ) -> None:
        refresh_s = settings.REGISTRY_REFRESH_S
        if key_is_new:
            # The gateway learns of a new key at its next registry refresh; asking sooner
            # would only leave 401 records behind.
            time.sleep(refresh_s * 1.2)
        try:
            traffic.wait_for_access(
                base_url,
                key,
                models,
                run_tag=run_tag,
                timeout_s=10 * refresh_s + 5 if key_is_new else 0,
                interval_s=refresh_s / 2,
            )
        except traffic.KeyRefused as exc:
            if not key_is_new:
                raise
            raise traffic.TrafficError(
                f"{exc} The key was created in this installation's database: does the gateway "
                "use another one? Pass --key or set BEASTMODE_KEY."
            ) from None

    def _throwaway_key(self, duration_s: float) -> str:
        """A key for this run only (never shown), expiring an hour after the run."""
        try:
            _, raw_key = create_service_key(
                "simulate-traffic",
                expires_at=timezone.now() + timedelta(seconds=duration_s + 3600),
            )
        except DatabaseError as exc:
            raise CommandError(
                f"No service key given (--key or BEASTMODE_KEY), and none could be created in "
                f"the database: {exc}"
            ) from None
        self.stdout.write("Created a throw-away service key 'simulate-traffic' for this run.")
        return raw_key

    def _progress(self, report: traffic.Report) -> None:
        answered = sum(report.by_status.values())
        self.stdout.write(f"  {report.sent} sent, {answered} answered")
        self.stdout.flush()
