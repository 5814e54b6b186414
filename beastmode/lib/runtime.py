"""Process-wide tuning applied once when the ASGI application loads."""

import contextlib
import ctypes
import ctypes.util
import gc
import sys

_M_ARENA_MAX = -8  # glibc's mallopt parameter number


def speed_up_twisted_content_type() -> None:
    """daphne's Twisted parses every request's Content-Type through `email.message`, whose
    header registry creates a new class per header: 11% of the GIL time in profiles, and
    thousands of classes a second for the cyclic garbage collector, which showed as
    40-130 ms pauses in the latency tail. Twisted only compares the result with the two
    form types, so a plain split gives the same answer."""
    http = sys.modules.get("twisted.web.http")
    if http is None or not hasattr(http, "_parseContentType"):
        return  # not under daphne (uvicorn), or a Twisted without this helper
    http._parseContentType = media_type


def skip_twisted_access_log() -> None:
    """Twisted formats a combined-log line for every request daphne serves and hands it
    to Twisted's log, which daphne points nowhere (or, at -v 2 and above, at the Python
    logger as a duplicate of its own access log, `--access-log`): 4% of the event loop's
    time per streamed request in profiles. daphne's own access log is untouched."""
    protocol = sys.modules.get("daphne.http_protocol")
    if protocol is not None:
        protocol.HTTPFactory.log = _no_log


def _no_log(factory: object, request: object) -> None:
    """Twisted's access log, skipped."""


def media_type(line: bytes) -> bytes:
    """The media type of a Content-Type value, lowercased, without parameters; text/plain
    when it is not type/subtype (as email.message's get_content_type answers)."""
    value = line.split(b";", 1)[0].strip().lower()
    return value if value.count(b"/") == 1 else b"text/plain"


def freeze_startup_objects() -> None:
    """Move everything loaded so far (Django, the apps, their modules) out of the cyclic
    collector's sight: full collections then scan only what requests create."""
    gc.collect()
    gc.freeze()


def limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread that allocates its own heap arena (up to 8 per core), each
    keeping what it freed; the server's handful of worker threads then hold tens of MiB.
    Call before those threads start. Best effort, glibc only."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt(_M_ARENA_MAX, arenas)


def shorten_gil_switch_interval(seconds: float = 0.001) -> None:
    """The writer threads (records, cache) take the GIL for Python work in bursts; a
    request's event loop waiting for it got it back only at the 5 ms default switch
    interval. At 1 ms the loop waits less: under uvicorn at 16 connections P99 fell from
    25-53 to 18-23 ms and P90 from 11-19 to 10-11 ms at the same req/s; neutral under
    daphne (alternating runs, docs/PERFORMANCE.md)."""
    sys.setswitchinterval(seconds)
