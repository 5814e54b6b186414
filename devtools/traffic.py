"""Sending simulated traffic through a running BeastMode's real HTTP API, at a steady rate.

Before sending, ``check_reachable`` and ``wait_for_access`` make sure the gateway answers and
takes the key; ``run`` then paces the requests of a plan (devtools/traffic_mix.py) and
counts what came back.
"""

import asyncio
import contextlib
import json
import signal
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp

from devtools.traffic_mix import Planned


class TrafficError(Exception):
    """The gateway cannot be used (unreachable, key refused, model missing)."""


class KeyRefused(TrafficError):
    pass


def check_reachable(base_url: str, timeout_s: float = 5.0) -> None:
    """Raises TrafficError unless something answers HTTP at the base URL's host; asks
    /health/liveliness, which leaves no request record."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise TrafficError(f"--base-url must be http(s)://host:port/v1, got {base_url!r}.")
    try:
        _get(f"{parts.scheme}://{parts.netloc}/health/liveliness", {}, timeout_s)
    except urllib.error.HTTPError:
        pass  # something answered HTTP: good enough
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrafficError(
            f"Cannot reach BeastMode at {base_url} ({reason}). Start it with `make run` "
            "(or point --base-url at it)."
        ) from None


def wait_for_access(
    base_url: str,
    key: str,
    models: list[str],
    *,
    run_tag: str,
    timeout_s: float,
    interval_s: float,
) -> None:
    """Wait until GET /models with ``key`` lists ``models``: a key created a moment ago
    reaches the gateway with its next registry refresh. Raises TrafficError."""
    deadline = time.monotonic() + timeout_s
    headers = {"Authorization": f"Bearer {key}", "X-Request-Id": f"simcheck-{run_tag}"}
    while True:
        try:
            listed = {m["id"] for m in json.loads(_get(f"{base_url}/models", headers, 10))["data"]}
        except urllib.error.HTTPError as exc:
            if exc.code != 401:
                raise TrafficError(f"GET {base_url}/models: {_error_message(exc)}") from None
            if time.monotonic() >= deadline:
                raise KeyRefused(f"The gateway refused the key: {_error_message(exc)}") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TrafficError(f"GET {base_url}/models failed: {exc}") from None
        else:
            if missing := [m for m in models if m not in listed]:
                raise TrafficError(
                    f"The gateway has no model {missing[0]!r} for this key (it has: "
                    f"{', '.join(sorted(listed)) or 'none'}). Run `manage.py load_demo` or "
                    "pass --model."
                )
            return
        time.sleep(interval_s)


def _get(url: str, headers: dict[str, str], timeout_s: float) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
    with opener.open(urllib.request.Request(url, headers=headers), timeout=timeout_s) as reply:
        return bytes(reply.read())


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read())["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {exc.code}"


# --- sending ----------------------------------------------------------------------------


@dataclass
class Report:
    asked_rps: float
    run_tag: str
    sent: int = 0
    elapsed_s: float = 0.0
    interrupted: bool = False
    by_kind: Counter[str] = field(default_factory=Counter)
    by_status: Counter[str] = field(default_factory=Counter)
    by_cache: Counter[str] = field(default_factory=Counter)
    by_error: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def achieved_rps(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s else 0.0

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def run(
    *,
    base_url: str,
    key: str,
    plan: Iterator[Planned],
    rps: float,
    duration_s: float,
    concurrency: int,
    run_tag: str,
    timeout_s: float = 30.0,
    progress: Callable[[Report], None] | None = None,
) -> Report:
    """Send ``plan`` at ``rps`` for ``duration_s`` with at most ``concurrency`` requests in
    flight. Ctrl-C stops sending and waits for the requests in flight; a second Ctrl-C
    cancels them. Request ids are ``sim-<run_tag>-<n>``."""
    report = Report(asked_rps=rps, run_tag=run_tag)
    sender = _Sender(base_url, key, report, timeout_s)
    asyncio.run(sender.run(plan, rps, duration_s, concurrency, progress))
    return report


class _Sender:
    def __init__(self, base_url: str, key: str, report: Report, timeout_s: float) -> None:
        self.url = f"{base_url}/chat/completions"
        self.key = key
        self.report = report
        self.timeout_s = timeout_s
        self.in_flight: set[asyncio.Task[None]] = set()
        self.dispatcher: asyncio.Task[None] | None = None

    async def run(
        self,
        plan: Iterator[Planned],
        rps: float,
        duration_s: float,
        concurrency: int,
        progress: Callable[[Report], None] | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
            loop.add_signal_handler(signal.SIGINT, self._interrupt)
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        connector = aiohttp.TCPConnector(limit=concurrency)
        started = loop.time()
        try:
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                self.dispatcher = asyncio.create_task(
                    self._dispatch(session, plan, rps, duration_s, concurrency, progress)
                )
                with contextlib.suppress(asyncio.CancelledError):
                    await self.dispatcher
                sending_s = loop.time() - started
                # On schedule, the last request leaves 1/rps before the end of the duration.
                self.report.elapsed_s = (
                    sending_s if self.report.interrupted else max(duration_s, sending_s)
                )
                await asyncio.gather(*self.in_flight, return_exceptions=True)
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGINT)

    def _interrupt(self) -> None:
        if self.dispatcher is not None and not self.dispatcher.done():
            self.report.interrupted = True
            self.dispatcher.cancel()
        else:  # a second Ctrl-C, or one while waiting for the last answers
            for task in self.in_flight:
                task.cancel()

    async def _dispatch(
        self,
        session: aiohttp.ClientSession,
        plan: Iterator[Planned],
        rps: float,
        duration_s: float,
        concurrency: int,
        progress: Callable[[Report], None] | None,
    ) -> None:
        """Request n is due at start + n/rps (an absolute schedule, so a short stall is
        caught up); sending stops at the duration even when behind schedule."""
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(concurrency)
        start = next_progress = loop.time()
        for n, planned in enumerate(plan):
            due = start + n / rps
            if due - start >= duration_s or loop.time() - start >= duration_s:
                return
            await asyncio.sleep(max(0.0, due - loop.time()))
            await slots.acquire()
            task = asyncio.create_task(self._send(session, planned, n))
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)
            task.add_done_callback(lambda _: slots.release())
            self.report.sent += 1
            self.report.by_kind[planned.kind] += 1
            if progress is not None and loop.time() >= next_progress + 10:
                next_progress += 10
                progress(self.report)

    async def _send(self, session: aiohttp.ClientSession, planned: Planned, n: int) -> None:
        headers = {
            "Authorization": f"Bearer {self.key}",
            "Content-Type": "application/json",
            "X-Request-Id": f"sim-{self.report.run_tag}-{n}",
        }
        started = time.perf_counter()
        report = self.report
        try:
            async with session.post(self.url, data=planned.body, headers=headers) as response:
                body = await response.read()
                status = str(response.status)
                cache = response.headers.get("x-beastmode-cache", "none")
        except asyncio.CancelledError:
            report.by_status["cancelled"] += 1
            raise
        except (aiohttp.ClientError, TimeoutError) as exc:
            report.by_status["no answer"] += 1
            report.by_error[type(exc).__name__] += 1
            return
        report.latencies_ms.append((time.perf_counter() - started) * 1000)
        report.by_status[status] += 1
        report.by_cache[cache] += 1
        if error_class := _error_class(body, streamed=planned.stream and status == "200"):
            report.by_error[error_class] += 1


def _error_class(body: bytes, *, streamed: bool) -> str:
    """The error's `code` from an error body, or from an error event inside a stream."""
    chunks = [line[6:] for line in body.splitlines() if line.startswith(b"data: ")]
    for chunk in chunks if streamed else [body]:
        with contextlib.suppress(ValueError):
            payload = json.loads(chunk)
            if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
                return str(payload["error"].get("code") or payload["error"].get("type"))
    return ""


def summary_lines(report: Report, *, seed: int) -> list[str]:
    def counts(counter: Counter[str], *, by_name: bool = False) -> str:
        items = sorted(counter.items()) if by_name else counter.most_common()
        return ", ".join(f"{name} {count}" for name, count in items) or "-"

    lines = [
        f"Sent {report.sent} requests in {report.elapsed_s:.1f} s: "
        f"{report.achieved_rps:.1f}/s (asked {report.asked_rps:g}/s)"
        + (", interrupted" if report.interrupted else "")
        + f". Request ids sim-{report.run_tag}-*, --seed {seed}.",
        f"  mix:     {counts(report.by_kind)}",
        f"  status:  {counts(report.by_status, by_name=True)}",
        f"  cache:   {counts(report.by_cache)}",
        f"  errors:  {counts(report.by_error)}",
        f"  latency: p50 {report.percentile_ms(0.5):.0f} ms, p95 {report.percentile_ms(0.95):.0f}"
        f" ms, max {max(report.latencies_ms, default=0):.0f} ms",
    ]
    if not report.interrupted and report.achieved_rps < 0.9 * report.asked_rps:
        lines.append(
            "  Fell behind the asked rate: raise --concurrency, or the gateway (or this "
            "machine) is at its limit."
        )
    if report.by_kind["paraphrase"] and not report.by_cache["semantic"]:
        lines.append(
            "  Paraphrases were not semantic hits: turn the model's semantic mode on "
            "(admin → Routes) to see them."
        )
    if not report.by_kind["failing"]:
        lines.append(
            "  No upstream errors in this mix: pass --failing-model with a model whose "
            "endpoint fails to see them."
        )
    return lines
