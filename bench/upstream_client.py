"""CPU and wall time of one upstream call: BeastMode's client (routing.http_client) vs
aiohttp, in one process, against the fake upstream, on the loop the servers use (uvloop).

    .venv/bin/python bench/upstream_client.py            # 4,000 sequential calls each
    .venv/bin/python bench/upstream_client.py --calls 20000

Each client is timed in alternating rounds (best of three by CPU) so that a noisy minute
hits both. No Django: only the client and the upstream.
"""

import argparse
import json
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from routing import http_client  # noqa: E402

BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def ours(url: str, calls: int) -> None:
    for _ in range(calls):
        response = await http_client.post(url, HEADERS, BODY, connect_timeout_s=5)
        await response.read()
        response.close()
    http_client.close_connections()


async def with_aiohttp(url: str, calls: int) -> None:
    # As BeastMode used it: one pooled session, no per-request timeout object of its own.
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=None),
        skip_auto_headers=("User-Agent",),
    ) as session:
        for _ in range(calls):
            async with session.post(url, data=BODY, headers=HEADERS) as response:
                await response.read()


def measure(client: Callable[[str, int], Awaitable[None]], url: str, calls: int) -> tuple:
    cpu, wall = time.process_time(), time.perf_counter()
    uvloop.run(client(url, calls))
    return (time.process_time() - cpu) / calls * 1e6, (time.perf_counter() - wall) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "devtools.fake_upstream", "--port", str(port)], cwd=ROOT
    )
    try:
        deadline = time.monotonic() + 20
        while not _listening(port):
            if time.monotonic() > deadline:
                sys.exit("the fake upstream did not start")
            time.sleep(0.1)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        clients = {"routing.http_client": ours, "aiohttp 3.14": with_aiohttp}
        for client in clients.values():
            measure(client, url, 200)  # warm-up
        results: dict[str, list[tuple]] = {name: [] for name in clients}
        for _ in range(args.rounds):
            for name, client in clients.items():
                results[name].append(measure(client, url, args.calls))
        print(f"{args.calls} sequential POST + read per round, best of {args.rounds} rounds")
        print(f"{'client':22s} {'CPU µs/call':>12s} {'wall µs/call':>13s}")
        best = {name: min(rounds) for name, rounds in results.items()}
        for name, (cpu, wall) in best.items():
            print(f"{name:22s} {cpu:12.1f} {wall:13.1f}")
        ours_cpu, theirs_cpu = best["routing.http_client"][0], best["aiohttp 3.14"][0]
        print(f"aiohttp / ours CPU: {theirs_cpu / ours_cpu:.1f}x")
    finally:
        upstream.terminate()
        upstream.wait()


if __name__ == "__main__":
    main()
