"""Secrets out of every text that leaves the process or lands in storage: one function,
`redact`, that every sink calls (errors, records, probes, job results, logs, /metrics).

It removes any run of characters that holds 8 or more consecutive characters of a known
upstream key (with or without its prefix: `sk-`, `sk-proj-`, `Bearer `...), and anything
shaped like a key. It learns the keys where they are decrypted (routing's
`ModelEndpoint.get_api_key` calls `remember`), so no app below routing needs to know
routing, and a process knows every key it could ever send upstream.

How: the set of every 8-character substring of every key. A text is cut into runs of the
characters keys are made of (one C-speed regex scan); each run of 8 or more is looked
up 8 characters at a time, and a run holding any known substring is replaced whole.
"""

import logging
import re
import threading
from collections.abc import Iterable
from itertools import islice

REDACTED = "[redacted]"
MIN_FRAGMENT = 8  # this many consecutive characters of a key are a leak
# What providers put before the secret part; a substring of these alone is no secret.
KNOWN_PREFIXES = ("Bearer ", "sk-proj-", "sk-ant-", "sk-svcacct-", "sk-")
# Shaped like a key whether configured or not (as routing/diagnosis.py always did), and
# whatever follows an authorization scheme.
_KEYLIKE = re.compile(r"\b(?:sk|bm|key)-[A-Za-z0-9_\-*.]{6,}|(?<=Bearer )[A-Za-z0-9_\-.~+/=*]{6,}")
_KEYLIKE_MARKS = ("sk-", "bm-", "key-", "Bearer")  # without one, the regex cannot match

_lock = threading.Lock()
_keys: set[str] = set()
_fragments: set[str] = set()  # every 8-character substring of a key (its prefix alone aside)
_alphabet: set[str] = set()  # the characters keys are made of
_runs: re.Pattern[str] | None = None  # runs of 8 or more of those characters


def remember(keys: Iterable[str]) -> None:
    """Redact these upstream keys from now on, for the life of the process (a key replaced
    in admin may still be quoted by an answer in flight). Cheap for keys already known.
    A key shorter than 8 characters has no fragment to look for: only its shape is."""
    global _runs
    new = {key.removeprefix("Bearer ").strip() for key in keys} - _keys - {""}
    if not new:
        return
    with _lock:
        for key in new:
            prefix = next((p for p in KNOWN_PREFIXES if key.startswith(p)), "")
            for start in range(max(0, len(prefix) - MIN_FRAGMENT + 1), len(key) - MIN_FRAGMENT + 1):
                _fragments.add(key[start : start + MIN_FRAGMENT])
            _alphabet.update(key)
            _keys.add(key)
        chars = "".join(sorted(_alphabet))
        # A run starts where the character before is not a key's: the engine does not try
        # again inside a shorter one.
        char = f"[{re.escape(chars)}]"
        _runs = re.compile(f"(?<!{char})(?>{char}{{{MIN_FRAGMENT},}})")


def redact(text: str) -> str:
    """`text` without any known key's 8-character fragments, or anything shaped like a key:
    each run of key characters that holds one becomes "[redacted]".

    >>> remember(["sk-abcdefghijklmnopqrs"])
    >>> redact("Incorrect API key provided: cdefghijklmnopqrs.")
    'Incorrect API key provided: [redacted].'
    """
    if not text:
        return text
    runs, fragments = _runs, _fragments
    if runs is not None and any(_holds(run[0], fragments) for run in runs.finditer(text)):
        text = runs.sub(lambda run: REDACTED if _holds(run[0], fragments) else run[0], text)
    if any(mark in text for mark in _KEYLIKE_MARKS):
        text = _KEYLIKE.sub(REDACTED, text)
    return text


_windows: list[slice] = []  # slice(i, i + 8) for every i a run has needed so far


def _holds(run: str, fragments: set[str]) -> bool:
    """Whether any 8 consecutive characters of `run` are a key's (in C: the set's
    isdisjoint over the run's windows, no Python loop)."""
    count = len(run) - MIN_FRAGMENT + 1
    windows = _windows
    if len(windows) < count:
        windows = _windows[:] = [slice(i, i + MIN_FRAGMENT) for i in range(count * 2)]
    return not fragments.isdisjoint(map(run.__getitem__, islice(windows, count)))


class RedactingFilter(logging.Filter):
    """Installed on every handler in settings.LOGGING (and on the handlers servers and
    workers set up themselves: `install_on`): each record's message (its args merged in),
    traceback and stack are redacted before any handler formats them. A record with
    nothing to redact is left as it is (servers' formatters read its args)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: let the handler report it as usual
            return True
        if (redacted := redact(message)) != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_on(logger: logging.Logger) -> None:
    """Redact what the logger's own handlers write (once per handler)."""
    for handler in logger.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
