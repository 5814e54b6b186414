"""The upstream HTTP client against real servers on loopback: a scripted asyncio server
for the edge cases of HTTP/1.1, and the fake upstream."""

import asyncio
import json
import socket
import ssl
from collections.abc import Awaitable, Callable

import pytest

from routing import http_client
from tests.processes import Process, free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

OK_BODY = b'{"ok": true}'


def ok_response(body: bytes = OK_BODY, extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head, await reader.readexactly(length)


def serve(handler: Handler, scenario: Callable[[str], Awaitable[None]]) -> list[int]:
    """Run `scenario(url)` against a server calling `handler` per connection; returns the
    number of requests each connection carried, in order of connection."""
    connections: list[int] = []

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(0)
        try:
            await handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            await scenario(f"http://127.0.0.1:{port}/v1/chat/completions")
        finally:
            http_client.close_connections()
            server.close()

    asyncio.run(main())
    return connections


async def post(url: str, body: bytes = b"{}", **headers: str) -> http_client.Response:
    return await http_client.post(url, headers, body, connect_timeout_s=2)


async def fetch(url: str, body: bytes = b"{}") -> bytes:
    """POST, read the whole answer, hand the connection back."""
    response = await post(url, body)
    try:
        return await response.read()
    finally:
        response.close()


def keep_alive_handler(answers: int = 1000) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(answers):
            _head, body = await read_request(reader)
            writer.write(ok_response(json.dumps({"echo": body.decode()}).encode()))
            await writer.drain()

    return handler


def test_sequential_requests_share_one_keep_alive_connection() -> None:
    bodies: list[bytes] = []

    async def scenario(url: str) -> None:
        for n in range(20):
            bodies.append(await fetch(url, json.dumps({"n": n}).encode()))
        assert list(http_client.pool_stats().values()) == [1]

    connections = serve(keep_alive_handler(), scenario)
    assert len(connections) == 1
    assert [json.loads(json.loads(b)["echo"])["n"] for b in bodies] == list(range(20))


def test_closing_a_response_twice_pools_its_connection_once() -> None:
    async def scenario(url: str) -> None:
        response = await post(url)
        await response.read()
        response.close()
        response.close()
        assert list(http_client.pool_stats().values()) == [1]
        first, second = await asyncio.gather(post(url, b'{"n": 1}'), post(url, b'{"n": 2}'))
        assert [json.loads(await r.read())["echo"] for r in (first, second)] == [
            '{"n": 1}',
            '{"n": 2}',
        ]

    assert len(serve(keep_alive_handler(), scenario)) == 2


def test_the_request_carries_host_length_body_and_headers() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, body = await read_request(reader)
        seen.extend([head, body])
        writer.write(ok_response())

    async def scenario(url: str) -> None:
        response = await post(url, b'{"q": 1}', Authorization="Bearer sk-test")
        assert (response.status, await response.read()) == (200, OK_BODY)
        assert response.headers["content-type"] == "application/json"  # names in lower case
        response.close()

    serve(handler, scenario)
    head, body = seen
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"\r\nHost: 127.0.0.1:" in head and b"\r\nContent-Length: 8\r\n" in head
    assert b"\r\nAuthorization: Bearer sk-test\r\n" in head
    assert body == b'{"q": 1}'


def test_a_header_with_a_line_break_is_refused_before_anything_is_sent() -> None:
    async def scenario(url: str) -> None:
        with pytest.raises(ValueError, match="line break"):
            await post(url, Authorization="Bearer x\r\nX-Injected: 1")

    assert serve(keep_alive_handler(), scenario) == []


def test_an_idle_connection_the_upstream_closed_is_replaced_without_an_error() -> None:
    async def close_after_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok_response())  # keep-alive announced, then closed while idle
        await writer.drain()

    async def scenario(url: str) -> None:
        for _ in range(3):
            assert await fetch(url) == OK_BODY
            await asyncio.sleep(0.05)

    assert len(serve(close_after_one, scenario)) == 3


def test_a_reused_connection_closed_as_the_request_is_sent_is_retried_once() -> None:
    async def close_silently_on_second(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        writer.write(ok_response())
        await writer.drain()
        await read_request(reader)  # the second request: dropped, as if the idle timer won
        writer.transport.abort()

    async def scenario(url: str) -> None:
        for _ in range(2):
            assert await fetch(url) == OK_BODY

    serve(close_silently_on_second, scenario)


def test_a_new_connection_closed_without_an_answer_is_server_disconnected() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async def scenario(url: str) -> None:
        with pytest.raises(http_client.ServerDisconnected):
            await post(url)

    assert len(serve(hang_up, scenario)) == 1  # not retried: the request may have been run


def test_a_body_cut_short_of_its_length_is_an_error_not_a_short_answer() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial":')

    async def scenario(url: str) -> None:
        response = await post(url)
        with pytest.raises(http_client.ServerDisconnected):
            await response.read()
        response.close()

    serve(cut, scenario)


def test_a_body_delimited_by_closing_the_connection_is_read_whole() -> None:
    async def http10(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + OK_BODY)

    async def scenario(url: str) -> None:
        assert await fetch(url) == OK_BODY
        assert http_client.pool_stats() == {}  # such a connection is never reused

    serve(http10, scenario)


def test_garbage_instead_of_http_is_a_malformed_response() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")

    async def scenario(url: str) -> None:
        with pytest.raises(http_client.MalformedResponse):
            await post(url)

    serve(garbage, scenario)


def test_a_chunked_stream_is_read_in_lines_as_they_arrive() -> None:
    events = [b'data: {"n": 1}', b"", b'data: {"n": 2}', b"", b"data: [DONE]", b""]
    release = asyncio.Event()

    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        payload = b"\n".join(events)
        # A line split across chunks, a chunk holding several lines, CRLF line ends.
        first, rest = payload[:9], payload[9:].replace(b"\n\n", b"\r\n\r\n", 1)
        for part in (first, rest[:20]):
            writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        await writer.drain()
        await release.wait()
        writer.write(f"{len(rest) - 20:x}\r\n".encode() + rest[20:] + b"\r\n0\r\n\r\n")

    async def scenario(url: str) -> None:
        response = await post(url)
        # before the rest was even sent, and the line split across chunks whole
        assert await response.next_lines() == events[:2]
        release.set()
        # the lines of one write come together (a relay forwards them in one write)
        assert await response.next_lines() == events[2:-1]
        assert await response.next_lines() == []  # the end of the body
        response.close()

    serve(chunked, scenario)


def test_a_large_body_is_read_whole_while_reading_pauses_and_resumes() -> None:
    big = b"x" * (5 * 1024 * 1024)

    async def large(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok_response(big))
        await writer.drain()

    async def scenario(url: str) -> None:
        response = await post(url)
        await asyncio.sleep(0.2)  # let more than the pause threshold arrive unread
        assert await response.read() == big
        response.close()

    serve(large, scenario)


def test_read_with_a_limit_stops_early_and_does_not_reuse_the_connection() -> None:
    async def large(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok_response(b"e" * 300_000))
        await writer.drain()

    async def scenario(url: str) -> None:
        response = await post(url)
        assert len(await response.read(limit=1000)) == 1000
        response.close()
        assert http_client.pool_stats() == {}

    serve(large, scenario)


def test_connection_refused_and_dns_failure_raise_their_own_errors() -> None:
    async def scenario() -> None:
        with pytest.raises(ConnectionRefusedError):
            await post(f"http://127.0.0.1:{free_port()}/v1")
        with pytest.raises(socket.gaierror):
            await post("http://no-such-host.invalid/v1")

    asyncio.run(scenario())


def test_tls_to_a_plain_http_server_is_an_ssl_error() -> None:
    async def plain_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)  # a TLS ClientHello: a plain HTTP server answers 400 and closes
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    async def scenario(url: str) -> None:
        with pytest.raises(ssl.SSLError):
            await post(url.replace("http://", "https://"))

    serve(plain_http, scenario)


def test_a_listener_that_never_accepts_is_a_connect_timeout() -> None:
    # A full accept queue: the kernel drops further handshakes, so connect() waits.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)

    async def scenario() -> None:
        with pytest.raises(http_client.ConnectTimeout):
            await http_client.post(f"http://127.0.0.1:{port}/v1", {}, b"{}", connect_timeout_s=0.3)

    try:
        asyncio.run(scenario())
    finally:
        for sock in [*fillers, listener]:
            sock.close()


def test_a_cancelled_request_closes_its_connection_instead_of_pooling_it() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async def scenario(url: str) -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await post(url)
        assert http_client.pool_stats() == {}

    serve(slow, scenario)


def test_json_and_stream_from_the_fake_upstream(fake_upstream: Process) -> None:
    url = f"{fake_upstream.url}/v1/chat/completions"
    ask = {"model": "m", "messages": [{"role": "user", "content": "ping"}]}
    headers = {"Content-Type": "application/json"}

    async def scenario() -> None:
        response = await http_client.post(
            url, headers, json.dumps(ask).encode(), connect_timeout_s=2
        )
        completion = json.loads(await response.read())
        response.close()
        assert completion["choices"][0]["message"]["content"] == "Echo from m: ping"

        streamed = json.dumps({**ask, "stream": True}).encode()
        response = await http_client.post(url, headers, streamed, connect_timeout_s=2)
        lines: list[bytes] = []
        while batch := await response.next_lines():
            lines += batch
        response.close()
        data = [line for line in lines if line.startswith(b"data:")]
        assert data[-1] == b"data: [DONE]" and len(data) > 2
        http_client.close_connections()

    asyncio.run(scenario())
