"""The live-server part of bench/dashboard.py: the fake upstream and BeastMode under daphne,
one staff dashboard websocket per window recording every push (interval, age on arrival), a
trickle of background requests, and probes of how soon a request is counted in a push.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from dashboard_database import REPO

VENV_BIN = Path(sys.executable).parent

HOST = "127.0.0.1"
FRESH_MODEL = "bench-fresh"  # only the freshness probes use it: its count moves with them


class Processes:
    """Subprocesses started by this run, each leading its own session; stopped by group id."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str], port: int) -> None:
        log = (self.log_dir / f"{name}.log").open("wb")
        process = subprocess.Popen(
            argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.started[name] = process
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited: {self.log_tail(name)}")
            with suppress(OSError), socket.create_connection((HOST, port), timeout=0.2):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not listen on :{port}: {self.log_tail(name)}")

    def log_tail(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def stop_all(self) -> None:
        for process in self.started.values():
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.started.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def chat(port: int, key: str, model: str, content: str) -> int:
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": content}]})
        conn.request("POST", "/v1/chat/completions", body=body, headers={
            "Authorization": f"Bearer {key}", "Content-Type": "application/json",
        })  # fmt: skip
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@dataclass
class Push:
    arrived: float  # time.monotonic()
    age_s: float  # arrival (wall clock) minus the snapshot's generated_at
    fresh_requests: int  # requests of FRESH_MODEL in the snapshot


class Listener(threading.Thread):
    """One staff dashboard on one window: every push it receives, timestamped."""

    def __init__(self, port: int, session: str, window: str) -> None:
        super().__init__(daemon=True, name=f"ws-{window}")
        self.port, self.session, self.window = port, session, window
        self.pushes: list[Push] = []
        self.changed = threading.Condition()
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        from websockets.sync.client import connect

        try:
            with connect(
                f"ws://{HOST}:{self.port}/ws/monitoring/", origin=f"http://{HOST}:{self.port}",
                proxy=None, additional_headers={"Cookie": f"sessionid={self.session}"},
            ) as connection:  # fmt: skip
                connection.send(json.dumps({"window": self.window}))
                self._receive(connection)
        except BaseException as exc:
            self.error = exc
            raise

    def _receive(self, connection: Any) -> None:
        first = True
        while not self.stopping.is_set():
            try:
                message = json.loads(connection.recv(timeout=0.5))
            except TimeoutError:
                continue
            arrived, now = time.monotonic(), time.time()
            if message["window"] != self.window or first:
                # The snapshots sent on connect and on switching are not pushes.
                first = first and message["window"] != self.window
                continue
            generated = datetime.fromisoformat(message["generated_at"]).timestamp()
            fresh = sum(r["requests"] for r in message["by_model"] if r["model"] == FRESH_MODEL)
            with self.changed:
                self.pushes.append(Push(arrived, now - generated, fresh))
                self.changed.notify_all()

    def wait_for(self, check: Any, timeout_s: float) -> Push | None:
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while True:
                found = next((p for p in self.pushes if check(p)), None)
                if found or time.monotonic() > deadline:
                    return found
                self.changed.wait(deadline - time.monotonic())


class Trickle(threading.Thread):
    """Background traffic on the demo model: records being written while pushes go out."""

    def __init__(self, port: int, key: str, rate_per_s: float) -> None:
        super().__init__(daemon=True, name="trickle")
        self.port, self.key, self.rate_per_s = port, key, rate_per_s
        self.stopping = threading.Event()
        self.sent = 0

    def run(self) -> None:
        while not self.stopping.wait(1 / self.rate_per_s):
            # One prompt in four repeats an earlier one: exact cache hits among the misses.
            n = self.sent // 4 if self.sent % 4 == 0 else self.sent
            with suppress(OSError):
                chat(self.port, self.key, "demo", f"trickle {n}")
            self.sent += 1


@dataclass
class LiveFigures:
    intervals_s: dict[str, list[float]]
    ages_s: dict[str, list[float]]
    freshness_s: list[float]
    in_next_push: int
    trickle_sent: int
    load: tuple[float, float]


def measure_live(args: argparse.Namespace, env: dict[str, str], work_dir: Path) -> LiveFigures:
    from django.contrib.auth import get_user_model
    from django.test import Client

    from monitoring.snapshot import WINDOWS
    from routing.importer import import_models

    procs = Processes(work_dir)
    listeners: list[Listener] = []
    trickle = None
    try:
        upstream_port = free_port()
        procs.start(
            "upstream",
            [sys.executable, "-m", "devtools.fake_upstream", "--port", str(upstream_port)],
            env,
            upstream_port,
        )
        upstream_url = f"http://{HOST}:{upstream_port}/v1"
        done = subprocess.run(
            [sys.executable, "manage.py", "load_demo", "--upstream-url", upstream_url],
            cwd=REPO, env=env, capture_output=True, text=True, check=True, timeout=120,
        )  # fmt: skip
        key = done.stdout.strip().splitlines()[-1]
        import_models(
            f"models:\n  - name: {FRESH_MODEL}\n    endpoints:\n      - name: demo-upstream\n"
            f"        provider: openai\n        base_url: {upstream_url}\n"
            "        model: demo-echo\n"
        )
        browser = Client()
        browser.force_login(get_user_model().objects.get(username="admin"))
        session = browser.cookies["sessionid"].value

        port = free_port()
        procs.start(
            "beastmode",
            [str(VENV_BIN / "daphne"), "-v", "0", "-b", HOST, "-p", str(port),
             "beastmode.asgi:application"],
            env,
            port,
        )  # fmt: skip
        if chat(port, key, FRESH_MODEL, "warm-up") != 200:
            raise RuntimeError(f"gateway did not answer: {procs.log_tail('beastmode')}")
        trickle = Trickle(port, key, args.trickle_rate)
        trickle.start()
        listeners = [Listener(port, session, window) for window in WINDOWS]
        for listener in listeners:
            listener.start()
        freshness_listener = listeners[0]  # 15m: computed first in every tick
        load_before = os.getloadavg()[0]
        freshness, in_next = [], 0
        rng = random.Random(7)
        for trial in range(args.freshness):
            time.sleep(rng.uniform(0, 5))  # any phase of the push cycle
            before = (
                freshness_listener.pushes[-1].fresh_requests if freshness_listener.pushes else 0
            )
            status = chat(port, key, FRESH_MODEL, f"fresh {trial} {secrets.token_hex(4)}")
            answered = time.monotonic()
            if status != 200:
                raise RuntimeError(f"freshness probe answered {status}")
            push = freshness_listener.wait_for(
                lambda p, b=before, t=answered: p.arrived > t and p.fresh_requests > b, 30
            )
            if push is None:
                raise RuntimeError(
                    f"no push reflected a request within 30 s ({freshness_listener.error!r})"
                )
            first_after = next(p for p in freshness_listener.pushes if p.arrived > answered)
            in_next += first_after is push
            freshness.append(push.arrived - answered)
            print(f"  freshness probe {trial + 1}: {freshness[-1]:.2f} s", flush=True)
        wanted = args.pushes + 1  # intervals need one more push
        deadline = time.monotonic() + 5 * wanted + 15
        while any(len(lst.pushes) < wanted for lst in listeners) and time.monotonic() < deadline:
            if failed := next((lst for lst in listeners if lst.error), None):
                raise RuntimeError(f"dashboard {failed.window} failed: {failed.error!r}")
            time.sleep(0.5)
        load = (load_before, os.getloadavg()[0])
        intervals = {
            lst.window: [b.arrived - a.arrived for a, b in itertools.pairwise(lst.pushes)]
            for lst in listeners
        }
        ages = {lst.window: [p.age_s for p in lst.pushes] for lst in listeners}
        return LiveFigures(intervals, ages, freshness, in_next, trickle.sent, load)
    finally:
        if trickle is not None:
            trickle.stopping.set()
        for listener in listeners:
            listener.stopping.set()
        for listener in listeners:
            listener.join(timeout=5)
        procs.stop_all()
