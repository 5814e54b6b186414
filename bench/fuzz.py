"""Hostile requests over HTTP: N requests (default 20,000) drawn by the same Hypothesis
strategies as tests/gateway/test_fuzz.py (devtools/hostile_requests.py) against a real
gateway, then the status counts, the 5xx count, request records vs requests, and canary
hits: started by itself, it gives the demo model's endpoint a planted key and points it at
the fake upstream's /leakkey/ mode, which quotes the key back in pieces in every answer,
then counts answers and records that hold any 8 characters of it (there must be none).

    .venv/bin/python bench/fuzz.py                          # starts upstream + daphne itself
    .venv/bin/python bench/fuzz.py --server uvicorn --requests 5000
    .venv/bin/python bench/fuzz.py --url http://127.0.0.1:8000 --key bm-... --model demo

Started by itself, it runs `migrate` and `load_demo` against DATABASE_URL (or a SQLite
file in a temporary directory), serves the demo model from the fake upstream (no request
ever reaches a paid one), and stops the gateway before it counts records: a stopped
gateway has written every record it took. Pointed at a running gateway (--url), records
are counted in DATABASE_URL's database after --settle-s seconds, if that is its database.

Answers without an `x-request-id` header never reached the app (the HTTP server refused
them first: docs/operations.md, "What the server refuses before the app"); they are
counted apart.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hypothesis import HealthCheck, Phase, given, settings

from bench.gateway_endpoints import HOST, REPO, Target
from bench.gateway_processes import (
    ProcessGroup,
    Run,
    free_port,
    gateway_env,
    prepare_gateway,
    server_argv,
    start_upstream,
    wait_ready,
)
from devtools.hostile_requests import HostileRequest, hostile_requests


@dataclass
class Outcome:
    status: int  # 0: the connection failed
    request_id: str | None  # None: the server answered before the app (or not at all)
    openai_error: bool  # an {"error": {message, type, param, code}} body
    body: bytes
    request: HostileRequest
    leaked: int = 0  # pieces of the planted canary key in the answer


def main() -> None:
    args = parse_args()
    work_dir = Path(tempfile.mkdtemp(prefix="bm-fuzz-"))
    procs = ProcessGroup(work_dir)
    try:
        if args.url:
            target_url, key, model, env = args.url, args.key, args.model, dict(os.environ)
        else:
            target_url, key, model, env = start_gateway(args, procs, work_dir)
        print(f"drawing {args.requests} requests (Hypothesis: ~20 ms each) ...", flush=True)
        drawing = time.monotonic()
        requests = generate(args.requests, key=key, model=model)
        print(f"drawn in {time.monotonic() - drawing:.0f} s; sending them to {target_url} ...",
              flush=True)  # fmt: skip
        started = time.monotonic()
        outcomes = send_all(target_url, requests, args.concurrency)
        elapsed_s = time.monotonic() - started
        if not args.url:
            procs.stop("gateway")  # it writes every record it took before it exits
        else:
            time.sleep(args.settle_s)
        ids = [o.request_id for o in outcomes if o.request_id is not None]
        records = (
            count_records(ids, env, work_dir) if env.get("DATABASE_URL") or not args.url else None
        )
    finally:
        procs.stop_all()
    report(outcomes, records, elapsed_s, args.show_refused)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=8, help="connections at once")
    parser.add_argument("--server", choices=("daphne", "uvicorn"), default="daphne")
    parser.add_argument("--url", help="a running gateway (default: start one)")
    parser.add_argument("--key", help="its service key (with --url)")
    parser.add_argument("--model", default="demo", help="a model the key may use (with --url)")
    parser.add_argument(
        "--settle-s", type=float, default=5.0, help="with --url: wait for its records this long"
    )
    parser.add_argument(
        "--show-refused", type=int, default=0, help="print this many refused before the app"
    )
    args = parser.parse_args()
    if args.url and not args.key:
        parser.error("--url needs --key")
    # What bench/gateway_processes.py expects of a run's arguments.
    args.project_dir, args.upstream_module = REPO, "devtools.fake_upstream"
    return args


def start_gateway(
    args: argparse.Namespace, procs: ProcessGroup, work_dir: Path
) -> tuple[str, str, str, dict[str, str]]:
    """The fake upstream and the gateway under args.server; (url, key, model, env)."""
    run = Run(args=args, procs=procs, work_dir=work_dir)
    env = gateway_env(run)
    upstream = start_upstream(run)
    key = prepare_gateway(run, upstream, env)
    if key is None:
        sys.exit("the gateway could not be prepared")
    port = free_port()
    procs.start("gateway", server_argv(args.server, "beastmode.asgi:application", port), REPO, env)
    ready = wait_ready(procs, "gateway", Target("gateway", port, key), timeout=60)
    if not ready.ok:
        print(procs.log_tail("gateway"))
        sys.exit(f"the gateway did not come up: {ready.detail}")
    plant_canary(env, upstream)
    time.sleep(2)  # the gateway's registry follows changes every 0.5 s
    return f"http://{HOST}:{port}", key, "demo", env


# A planted upstream key, which the demo model's upstream (the fake upstream's /leakkey/
# mode) quotes back in pieces in every answer: no 8 characters of it may leave BeastMode.
CANARY = "sk-canary-" + secrets.token_hex(12)


def plant_canary(env: dict[str, str], upstream: Target) -> None:
    script = (
        "from routing.models import ModelEndpoint\n"
        "endpoint = ModelEndpoint.objects.get(name='demo-upstream')\n"
        f"endpoint.base_url = 'http://{HOST}:{upstream.port}/leakkey/v1'\n"
        f"endpoint.set_api_key({CANARY!r})\n"
        "endpoint.save()\n"
    )
    subprocess.run([sys.executable, "manage.py", "shell", "-c", script], cwd=REPO, env=env,
                   capture_output=True, text=True, timeout=120, check=True)  # fmt: skip


def canary_pieces(text: str) -> int:
    """How many 8-character pieces of the canary `text` holds."""
    return sum(CANARY[i : i + 8] in text for i in range(len(CANARY) - 7))


def generate(count: int, *, key: str, model: str) -> list[HostileRequest]:
    """`count` requests from the strategies (random: a new draw every run)."""
    drawn: list[HostileRequest] = []

    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(request=hostile_requests(model=model, key=key))
    def collect(request: HostileRequest) -> None:
        drawn.append(request)

    collect()
    return drawn


def send_all(url: str, requests: list[HostileRequest], concurrency: int) -> list[Outcome]:
    local = threading.local()
    netloc = urlsplit(url).netloc

    def send(request: HostileRequest) -> Outcome:
        for attempt in range(2):  # a kept-alive connection the server closed: once more
            if getattr(local, "connection", None) is None:
                local.connection = http.client.HTTPConnection(netloc, timeout=30)
            try:
                return _send_one(local.connection, request)
            except (OSError, http.client.HTTPException):
                local.connection.close()
                local.connection = None
                if attempt == 1:
                    return Outcome(0, None, False, b"", request)
        raise AssertionError("unreachable")

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(send, requests))


def _send_one(connection: http.client.HTTPConnection, request: HostileRequest) -> Outcome:
    path = quote(request.path.encode("utf-8", "surrogatepass"), safe="/")
    connection.putrequest(request.method, path, skip_accept_encoding=True)
    for name, value in request.headers:
        if name != b"content-length":  # the true one follows; the odd ones are for the test
            connection.putheader(name.decode("latin-1"), value)
    connection.putheader("Content-Length", str(len(request.body)))
    connection.endheaders(request.body)
    response = connection.getresponse()
    body = response.read()
    if response.getheader("connection", "").lower() == "close":
        connection.close()
    return Outcome(
        leaked=canary_pieces(body.decode("utf-8", "replace") + str(response.getheaders())),
        status=response.status,
        request_id=response.getheader("x-request-id"),
        openai_error=_is_openai_error(body),
        body=body[:300],
        request=request,
    )


def _is_openai_error(body: bytes) -> bool:
    try:
        error = json.loads(body)["error"]
        return all(name in error for name in ("message", "type", "param", "code"))
    except (ValueError, KeyError, TypeError):
        return False


def count_records(ids: list[str], env: dict[str, str], work_dir: Path) -> Counter[str]:
    """How many records each request id has, read by a Django shell on the gateway's
    database, and (under a key of its own) how many hold a piece of the canary."""
    ids_path = work_dir / "request-ids.json"
    ids_path.write_text(json.dumps(ids))
    script = (
        "import json\n"
        "from collections import Counter\n"
        "from monitoring.models import RequestRecord\n"
        f"ids = json.load(open({str(ids_path)!r}))\n"
        f"pieces = {[CANARY[i : i + 8] for i in range(len(CANARY) - 7)]!r}\n"
        "found, leaked = Counter(), 0\n"
        "for start in range(0, len(ids), 5000):\n"
        "    for row in RequestRecord.objects.filter(request_id__in=ids[start:start + 5000])"
        ".values():\n"
        "        found[row['request_id']] += 1\n"
        "        leaked += any(piece in str(row) for piece in pieces)\n"
        "print(json.dumps({'found': found, 'leaked': leaked}))\n"
    )
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    result = json.loads(done.stdout.strip().splitlines()[-1])
    found: Counter[str] = Counter(result["found"])
    found["(records with a canary piece)"] = result["leaked"]
    return found


def report(
    outcomes: list[Outcome], records: Counter[str] | None, elapsed_s: float, show_refused: int
) -> None:
    statuses = Counter(o.status for o in outcomes)
    app_answers = [o for o in outcomes if o.request_id is not None]
    before_app = [o for o in outcomes if o.request_id is None and o.status]
    server_errors = [o for o in outcomes if o.status >= 500]
    not_openai = [o for o in app_answers if not 200 <= o.status < 300 and not o.openai_error]
    print(f"\n{len(outcomes)} requests in {elapsed_s:.1f} s")
    print("status counts: " + ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())))
    print(f"5xx: {len(server_errors)}")
    print(f"connection failures: {statuses.get(0, 0)}")
    print(f"answered by the app: {len(app_answers)}; refused by the server before it: "
          f"{len(before_app)} ({dict(Counter(o.status for o in before_app))})")  # fmt: skip
    print(f"app errors that are not OpenAI-style: {len(not_openai)}")
    leaked_records = records.pop("(records with a canary piece)", 0) if records else 0
    quoting = sum(b"upstream_bad_request" in o.body for o in outcomes)
    print(f"canary key pieces (8 characters) leaked: in {sum(o.leaked > 0 for o in outcomes)} "
          f"answers, in {leaked_records} records ({quoting} answers passed on the upstream's "
          "error quoting the key)")  # fmt: skip
    if records is not None:
        ids = [o.request_id for o in app_answers]
        missing = sum(1 for i in ids if records.get(i, 0) == 0)
        extra = sum(1 for i in ids if records.get(i, 0) > 1)
        print(f"records: {sum(records.values())} for {len(ids)} requests the app answered "
              f"(missing {missing}, more than one {extra})")  # fmt: skip
    for outcome in (server_errors + not_openai)[:5]:
        print(f"  e.g. {outcome.status}: {outcome.body[:200]!r}")
    for outcome in before_app[:show_refused]:
        r = outcome.request
        print(f"  refused before the app: {outcome.status} {r.body[:60]!r} for {r.method} "
              f"{r.path[:60]!r} {[h for h in r.headers if h[0] != b'authorization']}")  # fmt: skip


if __name__ == "__main__":
    main()
