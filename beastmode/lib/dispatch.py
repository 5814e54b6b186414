"""Hand work to Celery, or, with no broker configured, to a thread in this process."""

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from celery import Task
from django.conf import settings
from django.db import close_old_connections

_in_process = ThreadPoolExecutor(max_workers=4, thread_name_prefix="task")


def enqueue(task: Task, *args: Any) -> None:
    if settings.CELERY_TASK_ALWAYS_EAGER:
        # Eager Celery would run the task inline and hold the caller up; a thread does not.
        _in_process.submit(_run_in_process, task, args)
    else:
        task.apply_async(args=args, expires=3600)


def _run_in_process(task: Task, args: tuple[Any, ...]) -> None:
    try:
        task.apply(args=args)
    finally:
        close_old_connections()
