"""The upstream HTTP client: HTTP/1.1 over asyncio transports, parsed by httptools, with a
pool of keep-alive connections per event loop.

Not aiohttp, which served here before: it cost several times the CPU per call
(bench/upstream_client.py, docs/PERFORMANCE.md). This client does only what an upstream
call needs: POST a body, read the whole answer or its lines as they come, reuse the
connection. Parsing (chunked bodies, keep-alive rules) is httptools', the parser uvicorn
serves with.

Failures leave as the exceptions `routing.diagnosis` classifies: ConnectTimeout,
socket.gaierror (DNS), ssl.SSLError (TLS), ConnectionRefusedError, ServerDisconnected,
MalformedResponse, other OSErrors; asyncio's own TimeoutError when a caller's deadline
strikes.
"""

import asyncio
import socket
import ssl
import weakref
from collections import deque
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any
from urllib.parse import urlsplit

import httptools

KEEPALIVE_S = 30.0  # an idle connection older than this is closed, not reused
MAX_IDLE_PER_ORIGIN = 64
_PAUSE_READING_BYTES = 1 << 20  # buffered and not yet read: stop reading the socket


class ConnectTimeout(TimeoutError):
    """The upstream did not accept a connection within the connect timeout."""


class ServerDisconnected(ConnectionError):
    """The upstream closed the connection before its answer was complete."""


class MalformedResponse(Exception):
    """The bytes that came back are not an HTTP/1.x response."""


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str
    port: int
    path: str
    host_header: str

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)


@lru_cache(maxsize=256)
def _target(url: str) -> _Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    default_port = 443 if parts.scheme == "https" else 80
    port = parts.port or default_port
    host_header = parts.hostname if port == default_port else f"{parts.hostname}:{port}"
    if ":" in parts.hostname:  # an IPv6 literal
        host_header = f"[{parts.hostname}]" + ("" if port == default_port else f":{port}")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target(parts.scheme, parts.hostname, port, path, host_header)


@cache
def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()


class _Connection(asyncio.Protocol):
    """One connection and the response being read from it (one at a time)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self._start_response()

    def _start_response(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.headers_done = False
        self.complete = False
        self.error: BaseException | None = None
        self.received_any = False
        self._until_close = False
        self._keep_alive = False
        self._paused = False

    # --- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(MalformedResponse(str(exc) or type(exc).__name__))
            self.close()

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost says what it means

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.complete or self.error is not None:
            return
        if exc is None and self.headers_done and self._until_close:
            self.complete = True  # a body delimited by the end of the connection
            self._wake()
        else:
            self._fail(exc or ServerDisconnected("the upstream closed the connection"))

    # --- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self.headers_done = True
        self._keep_alive = self._parser.should_keep_alive()  # known here, not at the end
        self._until_close = (
            "content-length" not in self.headers
            and "chunked" not in self.headers.get("transfer-encoding", "").lower()
            and self.status not in (204, 304)
            and self.status >= 200
        )
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _PAUSE_READING_BYTES and not self._paused and self.transport:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # --- used by Response and the pool

    def send(self, head: bytes, body: bytes) -> None:
        self._start_response()
        assert self.transport is not None
        self.transport.write(head + body)

    def take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        if self._paused and self.transport and not self.closed:
            self._paused = False
            self.transport.resume_reading()
        return data

    async def wait(self) -> None:
        """Until something new arrived (headers, body, the end, a failure)."""
        if self.error is not None:
            raise self.error
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self.error is not None:
            raise self.error

    @property
    def reusable(self) -> bool:
        return (
            self.complete
            and not self.closed
            and self.error is None
            and not self._until_close
            and self._keep_alive
        )

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class Response:
    """An upstream answer whose status and headers have arrived. Read it, then close it
    (which hands a finished keep-alive connection back to the pool)."""

    def __init__(self, connection: _Connection, pool: "_Pool", origin: tuple) -> None:
        self._connection = connection
        self._pool = pool
        self._origin = origin
        self.status = connection.status
        self.headers = connection.headers  # lower-case names
        self._released = False
        self._partial_line = b""

    async def read(self, limit: int | None = None) -> bytes:
        """The body; with `limit`, at most that many bytes (enough for an error message)."""
        connection = self._connection
        parts: list[bytes] = []
        size = 0
        while True:
            if connection.chunks:
                part = connection.take()
                parts.append(part)
                size += len(part)
            if connection.complete or (limit is not None and size >= limit):
                break
            await connection.wait()
        body = b"".join(parts)
        return body if limit is None else body[:limit]

    async def next_lines(self) -> list[bytes]:
        """The complete lines (without line ends) that arrived since the last call, waiting
        for at least one; [] at the end of the body. Lines that arrive together come
        together, so a stream relay can forward them in one write."""
        connection = self._connection
        while True:
            if connection.chunks:
                *complete, self._partial_line = (self._partial_line + connection.take()).split(
                    b"\n"
                )
                if complete:
                    return [line.removesuffix(b"\r") for line in complete]
            if connection.complete:
                last, self._partial_line = self._partial_line, b""
                return [last.removesuffix(b"\r")] if last else []
            await connection.wait()

    def close(self) -> None:
        """Idempotent: a connection handed back twice would serve two requests at once."""
        if self._released:
            return
        self._released = True
        connection = self._connection
        if connection.reusable and not connection.chunks:
            self._pool.release(self._origin, connection)
        else:
            connection.close()


class _Pool:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._idle: dict[tuple, deque[_Connection]] = {}

    async def post(
        self, url: str, headers: dict[str, str], body: bytes, connect_timeout_s: float
    ) -> Response:
        """Send the request; returns once the response's status and headers are in."""
        target = _target(url)
        head = _request_head(target, headers, len(body))
        for _ in range(2):
            connection, reused = await self._acquire(target, connect_timeout_s)
            try:
                connection.send(head, body)
                while not connection.headers_done:
                    await connection.wait()
            except ConnectionError:
                connection.close()
                # An idle connection the upstream closed just as it was reused: nothing
                # reached the upstream's application, so one more try is safe.
                if reused and not connection.received_any:
                    continue
                raise
            except BaseException:
                connection.close()
                raise
            return Response(connection, self, target.origin)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _acquire(self, target: _Target, connect_timeout_s: float) -> tuple[_Connection, bool]:
        idle = self._idle.get(target.origin)
        now = self._loop.time()
        while idle:
            connection = idle.pop()  # the most recently used
            if not connection.closed and now - connection.idle_since < KEEPALIVE_S:
                return connection, True
            connection.close()
        tls = _tls_context() if target.scheme == "https" else None
        try:
            async with asyncio.timeout(connect_timeout_s):
                _, connection = await self._loop.create_connection(
                    _Connection,
                    target.host,
                    target.port,
                    ssl=tls,
                    server_hostname=target.host if tls else None,
                )
        except TimeoutError:
            raise ConnectTimeout(f"no connection within {connect_timeout_s:g}s") from None
        connection.transport.get_extra_info("socket").setsockopt(  # type: ignore[union-attr]
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
        return connection, False

    def release(self, origin: tuple, connection: _Connection) -> None:
        idle = self._idle.setdefault(origin, deque())
        if len(idle) >= MAX_IDLE_PER_ORIGIN:
            idle.popleft().close()  # the longest idle
        connection.idle_since = self._loop.time()
        idle.append(connection)

    def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()


def _request_head(target: _Target, headers: dict[str, str], length: int) -> bytes:
    lines = [
        f"POST {target.path} HTTP/1.1",
        f"Host: {target.host_header}",
        f"Content-Length: {length}",
        "Accept-Encoding: identity",
    ]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"header {name!r} holds a line break")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


_pools: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Pool]" = weakref.WeakKeyDictionary()


def _pool() -> _Pool:
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    if pool is None:
        pool = _pools[loop] = _Pool(loop)
    return pool


async def post(
    url: str, headers: dict[str, str], body: bytes, *, connect_timeout_s: float
) -> Response:
    """POST through the running loop's pool; returns once status and headers arrived."""
    return await _pool().post(url, headers, body, connect_timeout_s)


def close_connections() -> None:
    """Close the running loop's idle connections (before the loop ends)."""
    pool = _pools.pop(asyncio.get_running_loop(), None)
    if pool is not None:
        pool.close()


def pool_stats() -> dict[str, Any]:
    """Idle connections per origin, for tests and debugging."""
    pool = _pools.get(asyncio.get_running_loop())
    return {} if pool is None else {origin: len(idle) for origin, idle in pool._idle.items()}
