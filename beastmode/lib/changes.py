"""Shared configuration changed, and every process must follow.

Routing owns the version every process polls (routing/registry.py). An app below it
announces a change with `announce()` and follows reloads through `reloaded`, without
importing routing.
"""

from django.dispatch import Signal

# Sent by `announce`; routing bumps the shared version every process polls.
announced = Signal()
# Sent by every process after it reloaded the shared configuration.
reloaded = Signal()


def announce() -> None:
    """Make every process reload the shared configuration within its refresh interval."""
    if not announced.has_listeners():
        raise RuntimeError("no app listens for configuration changes (is routing installed?)")
    announced.send(sender=None)
