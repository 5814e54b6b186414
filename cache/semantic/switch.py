"""What follows a change of a model's semantic mode (in admin, or by import_models)."""

from django.db import transaction

from beastmode.lib import dispatch
from cache import tasks


def mode_changed(model: str, *, was: str, now: str) -> bool:
    """From off to on or shadow: embed the answers the model stored while it was off
    (cache/semantic/backfill.py), once the caller's transaction has committed. Returns whether that
    was started."""
    if was != "off" or now == "off":
        return False
    transaction.on_commit(lambda: dispatch.enqueue(tasks.embed_stored_answers, model))
    return True
