from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from gateway import tasks
from gateway.models import WarmupPrompt


class Command(BaseCommand):
    help = "Warm the cache now: every enabled warm-up prompt (or the ids given)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("ids", nargs="*", type=int, help="warm-up prompt ids (default: all)")

    def handle(self, *args: Any, **options: Any) -> None:
        prompts = WarmupPrompt.objects.filter(enabled=True)
        if options["ids"]:
            prompts = prompts.filter(id__in=options["ids"])
        for prompt in prompts:
            if settings.CELERY_TASK_ALWAYS_EAGER:  # no broker: warm here and now
                result = tasks.warm_prompt.apply(args=[prompt.id]).get()
                self.stdout.write(f"{prompt}: {result}")
            else:
                tasks.warm_prompt.apply_async(args=[prompt.id], expires=600)
                self.stdout.write(f"{prompt}: queued for a Celery worker")
