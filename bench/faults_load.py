"""The steady load of bench/faults.py: an open loop of chat requests spread over the gateway
nodes, and the polls of the async jobs it submits.

Each request is one thread of a pool with its own connection (http.client), sent at its
scheduled time whatever the others are doing, so a request that hangs does not slow the
load down. Each carries an `x-request-id` of ours (`drill-<label>-<n>`), which BeastMode
keeps, so its record can be found later. Like a load balancer, a node whose port refuses
the connection (nothing was sent) is skipped for the next one; a connection that breaks
after the request went out is an error the client sees.
"""

from __future__ import annotations

import http.client
import itertools
import json
import random
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

HOST = "127.0.0.1"
CHAT_PATH = "/v1/chat/completions"
TIMEOUT_S = 30.0
# Share of the requests of each kind (the rest are new JSON prompts).
MIX = {"repeat": 0.25, "stream": 0.25, "job": 0.10}
REPEATED_PROMPTS = 20  # the prompts "repeat" and half the streams draw from: cache hits


@dataclass(frozen=True)
class Node:
    name: str
    port: int


@dataclass
class Sample:
    """One request as the client saw it. Times are time.monotonic()."""

    request_id: str
    label: str  # the scenario it was sent in
    kind: str  # new, repeat, stream, job (the POST), poll (GET /v1/jobs/<id>)
    started: float
    node: str = ""
    ended: float = 0.0
    latency_s: float | None = None  # the answer (JSON) or its first chunk (stream)
    status: int | None = None
    error: str = ""  # "" when the request did what it should
    reached: bool = False  # a connection to a node was open when the request was sent
    refused: int = 0  # nodes that refused the connection before one took it
    job_id: str = ""
    job_status: str = ""  # what a poll saw: queued, running, succeeded, failed: <code>

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass
class Job:
    id: str
    request_id: str
    label: str
    submitted: float
    polls: int = 0
    next_poll: float = 0.0
    outcome: str = ""  # succeeded, failed: <code>; "" while not ended
    ended: float = 0.0


@dataclass
class Load:
    """Sends `rate_per_s` requests a second until stop(); samples and jobs are kept."""

    nodes: list[Node]
    api_key: str
    models: dict[str, str]  # kind -> model name: "json", "stream", "job"
    rate_per_s: float = 20.0
    label: str = "warmup"
    samples: list[Sample] = field(default_factory=list)
    jobs: dict[str, Job] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _polling_stopped: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _counter: itertools.count[int] = field(default_factory=itertools.count)
    _next_node: itertools.count[int] = field(default_factory=itertools.count)
    _pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=400, thread_name_prefix="load")
    )
    _threads: list[threading.Thread] = field(default_factory=list)
    _random: random.Random = field(default_factory=lambda: random.Random(17))
    _run_id: str = field(default_factory=lambda: f"{int(time.time()) % 100000:05d}")

    def start(self) -> None:
        for target in (self._send_loop, self._poll_loop):
            thread = threading.Thread(target=target, daemon=True, name=target.__name__)
            thread.start()
            self._threads.append(thread)

    def stop(self, *, poll_open_jobs_s: float = 0.0) -> None:
        """Stop sending; keep polling open jobs up to `poll_open_jobs_s` first."""
        self._stop.set()
        deadline = time.monotonic() + poll_open_jobs_s
        while time.monotonic() < deadline and self.open_jobs():
            time.sleep(0.5)
        self._polling_stopped.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def open_jobs(self) -> list[Job]:
        with self._lock:
            return [job for job in self.jobs.values() if not job.outcome]

    def in_flight(self, node: str, kind: str) -> int:
        with self._lock:
            return sum(1 for s in self.samples if s.node == node and s.kind == kind and not s.ended)

    # --- sending -------------------------------------------------------------------------

    def _send_loop(self) -> None:
        interval = 1.0 / self.rate_per_s
        due = time.monotonic()
        while not self._stop.is_set():
            due += interval
            self._pool.submit(self._send_one, self._pick_kind())
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)

    def _pick_kind(self) -> str:
        draw = self._random.random()
        for kind, share in MIX.items():
            if draw < share:
                return kind
            draw -= share
        return "new"

    def _send_one(self, kind: str) -> None:
        n = next(self._counter)
        if kind == "repeat" or (kind == "stream" and n % 2):
            text = f"drill repeated question {n % REPEATED_PROMPTS}"
        else:
            text = f"drill question {self._run_id}-{n}"
        if kind == "stream":  # about a second: a chunk per word, 100 ms apart
            text += " with a longer answer that streams word by word"
        model = self.models["stream" if kind == "stream" else "job" if kind == "job" else "json"]
        body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}]}
        if kind == "stream":
            body["stream"] = True
        headers = {"X-BeastMode-Async": "true"} if kind == "job" else {}
        sample = self._new_sample(kind)
        self._exchange(sample, "POST", CHAT_PATH, json.dumps(body).encode(), headers)
        if kind == "job" and sample.job_id:
            with self._lock:
                self.jobs[sample.job_id] = Job(
                    sample.job_id, sample.request_id, sample.label, sample.started,
                    next_poll=time.monotonic() + 0.5,
                )  # fmt: skip

    def _new_sample(self, kind: str) -> Sample:
        sample = Sample(
            request_id=f"drill-{self._run_id}-{self.label}-{next(self._counter)}",
            label=self.label,
            kind=kind,
            started=time.monotonic(),
        )
        with self._lock:
            self.samples.append(sample)
        return sample

    def _exchange(
        self, sample: Sample, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> None:
        """Send the request to the next node that accepts a connection; fill `sample`."""
        conn = self._connect(sample)
        if conn is None:
            sample.ended = time.monotonic()
            return
        sample.reached = True
        headers = {"Authorization": f"Bearer {self.api_key}", "x-request-id": sample.request_id,
                   "Content-Type": "application/json", **headers}  # fmt: skip
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            sample.status = response.status
            if sample.kind == "stream" and response.status == 200:
                self._read_stream(sample, response)
            else:
                payload = response.read()
                sample.latency_s = time.monotonic() - sample.started
                self._judge_json(sample, payload)
        except TimeoutError:
            sample.error = "client timeout (30 s)"
        except (OSError, http.client.HTTPException) as exc:
            sample.error = f"connection: {type(exc).__name__}"
        finally:
            conn.close()
            sample.ended = time.monotonic()

    def _connect(self, sample: Sample) -> http.client.HTTPConnection | None:
        first = next(self._next_node)
        for i in range(len(self.nodes)):
            node = self.nodes[(first + i) % len(self.nodes)]
            conn = http.client.HTTPConnection(HOST, node.port, timeout=TIMEOUT_S)
            try:
                conn.connect()
            except ConnectionRefusedError:
                conn.close()
                sample.refused += 1
                continue
            except OSError as exc:
                conn.close()
                sample.node, sample.error = node.name, f"connect: {type(exc).__name__}"
                return None
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sample.node = node.name
            return conn
        sample.error = "every node refused the connection"
        return None

    def _read_stream(self, sample: Sample, response: http.client.HTTPResponse) -> None:
        events: list[bytes] = []
        while line := response.readline():
            if line.startswith(b"data: "):
                if sample.latency_s is None:
                    sample.latency_s = time.monotonic() - sample.started
                events.append(line[6:].strip())
        if not events or events[-1] != b"[DONE]":
            sample.error = "stream cut (no [DONE])"
        for event in events:
            if event.startswith(b'{"error"'):
                code = (json.loads(event).get("error") or {}).get("code") or "?"
                sample.error = f"stream error event: {code}"

    def _judge_json(self, sample: Sample, payload: bytes) -> None:
        try:
            parsed = json.loads(payload)
        except ValueError:
            sample.error = f"{sample.status} not JSON"
            return
        if sample.status not in (200, 202):
            code = (parsed.get("error") or {}).get("code", "?") if isinstance(parsed, dict) else "?"
            sample.error = f"{sample.status} {code}"
        elif sample.kind == "job":
            sample.job_id = str(parsed.get("id", ""))
        elif sample.kind == "poll":
            sample.job_status = str(parsed.get("status", "?"))
            if sample.job_status == "failed":
                code = (parsed.get("error") or {}).get("code", "?")
                sample.job_status = f"failed: {code}"

    # --- polling jobs ----------------------------------------------------------------------

    def _poll_loop(self) -> None:
        while not self._polling_stopped.is_set():
            now = time.monotonic()
            with self._lock:
                due = [j for j in self.jobs.values() if not j.outcome and j.next_poll <= now]
                for job in due:  # backoff: 0.5, 1, 2, 4 s, then every 5 s
                    job.next_poll = now + 60  # until this poll is back
            for job in due:
                self._pool.submit(self._poll_one, job)
            time.sleep(0.1)

    def _poll_one(self, job: Job) -> None:
        sample = self._new_sample("poll")
        sample.job_id = job.id
        self._exchange(sample, "GET", f"/v1/jobs/{job.id}", None, {})
        job.polls += 1
        with self._lock:
            if sample.job_status.startswith(("succeeded", "failed")):
                job.outcome, job.ended = sample.job_status, sample.ended
            job.next_poll = time.monotonic() + min(0.5 * 2 ** (job.polls - 1), 5.0)
