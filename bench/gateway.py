"""Gateway overhead benchmark: BeastMode vs the upstream directly, a bare ASGI app and LiteLLM.

Rerun (from the repository root; takes ~7 minutes with the defaults, ~2 with --quick):

    .venv/bin/python bench/gateway.py                      # 10 s per point, daphne and uvicorn
    .venv/bin/python bench/gateway.py --quick              # 3 s per point, for a smoke run
    .venv/bin/python bench/gateway.py --duration 20 --servers uvicorn --json-out var/bench.json

Needs ``wrk`` (``apt-get install -y wrk``; the script installs it itself when run as root
on a Debian-like system). LiteLLM's proxy is included when its separate venv exists:

    python3.11 -m venv .bench-venv-litellm
    .bench-venv-litellm/bin/pip install "litellm[proxy]==1.105.0"

What it does, all on loopback ports it picks itself, stopping every process it started
on exit (also on Ctrl-C / SIGTERM):

1. starts the 0 ms fake upstream (``python -m devtools.fake_upstream --port N``);
2. prepares the gateway in a throw-away SQLite dir (``BEASTMODE_VAR_DIR``; or the
   database in ``DATABASE_URL`` if you set one): ``manage.py migrate`` and
   ``manage.py load_demo --upstream-url ...``, whose last stdout line is the service key;
3. for each server (daphne, uvicorn) serves ``bench.bare_asgi:app`` and
   ``beastmode.asgi:application`` with identical flags (single process, no access log),
   then for each mode (JSON, SSE stream) and concurrency (1, 16) measures, back to back:
   the upstream directly, the bare app, BeastMode;
4. starts LiteLLM's proxy (one worker, no DB, no callbacks, spend logs off) against the
   same upstream and measures it the same way, with the upstream directly again just
   before it;
5. prints a table (req/s, P50/P95/P99 latency, *added* latency = target percentile minus
   the direct-upstream percentile at the same concurrency, measured in the same block)
   and the ratios against the targets.

Fairness: every point runs the same duration after a warm-up at the same concurrency, with
one wrk thread per connection (latency timed per request in wrk's Lua: see LUA_TEMPLATE);
every target gets the same request body, byte for byte the same size. By default the body
carries a nonce of its wrk run and a fixed-width per-request counter in the user message
(``"hi #1f2e3d4c-00-0000000042"``) so that no exact-match cache can answer: the figures are
the pass-through path. (Before session 4 there was no nonce, and a measured run repeated
its warm-up's bodies: BeastMode's earlier figures include cache hits.) ``--body same``
sends one identical body instead (for BeastMode that measures the cache-hit path; LiteLLM
has no cache configured, so it still passes through). The machine is shared and noisy:
compare the ratios within one run, not absolute figures across runs.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import platform
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Literal

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
LITELLM_VENV = REPO / ".bench-venv-litellm"
LITELLM_PIN = "1.105.0"  # newer releases need a certifi newer than the package index here has
CHAT_PATH = "/v1/chat/completions"
MODEL = "demo"
HOST = "127.0.0.1"

Mode = Literal["json", "stream"]
SERVERS = ("daphne", "uvicorn")
MODES: tuple[Mode, ...] = ("json", "stream")

# Targets from the issue.
TARGET_THROUGHPUT_VS_BARE = 0.40
TARGET_THROUGHPUT_VS_LITELLM = 10.0
TARGET_ADDED_P50_C1_MS = 1.5
TARGET_P99_VS_BARE_MS = 2.0

# Above this, a point's latency samples are inconsistent with its throughput (see occupancy).
OCCUPANCY_LIMIT = 1.25


# --------------------------------------------------------------------------- processes


class ProcessGroup:
    """Subprocesses started by this run; each in its own session, stopped by its group id."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, IO[bytes]] = {}

    def start(
        self, name: str, argv: Sequence[str], cwd: Path, env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._procs[name] = proc
        self._logs[name] = log
        return proc

    def stop(self, name: str) -> None:
        proc = self._procs.pop(name, None)
        log = self._logs.pop(name, None)
        if proc is not None and proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=8)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=5)
        if log is not None:
            log.close()

    def stop_all(self) -> None:
        for name in list(self._procs):
            self.stop(name)

    def exited(self, name: str) -> int | None:
        proc = self._procs.get(name)
        return None if proc is None else proc.poll()

    def log_tail(self, name: str, lines: int = 25) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        text = path.read_text(errors="replace").splitlines()
        return "\n".join("    | " + line for line in text[-lines:])


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)  # the child leads its own session, so its group is its pid


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """Something that answers POST /v1/chat/completions."""

    name: str
    port: int
    api_key: str
    model: str = MODEL

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{CHAT_PATH}"


@dataclass
class CheckResult:
    ok: bool
    detail: str
    cache_header: str | None = None


def request_body(mode: Mode, marker: str) -> bytes:
    """The benchmark body; ``marker`` is the fixed-width ``NN-NNNNNNNNNN`` request id."""
    body: dict[str, object] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"hi #{marker}"}],
    }
    if mode == "stream":
        body["stream"] = True
    return json.dumps(body, separators=(",", ":")).encode()


def check_target(target: Target, mode: Mode, timeout: float = 10.0) -> CheckResult:
    """One request outside the measurement: is the answer a real 200 completion?"""
    body = request_body(mode, f"99-{secrets.randbelow(10**10):010d}")
    conn = http.client.HTTPConnection(HOST, target.port, timeout=timeout)
    try:
        conn.request(
            "POST",
            CHAT_PATH,
            body=body,
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {target.api_key}",
            },
        )
        response = conn.getresponse()
        payload = response.read()
        cache = response.getheader("x-beastmode-cache")
    except (OSError, http.client.HTTPException) as exc:
        return CheckResult(False, f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()
    text = payload.decode(errors="replace")
    if response.status != 200:
        return CheckResult(False, f"HTTP {response.status}: {text[:300]}", cache)
    if mode == "stream":
        if not text.rstrip().endswith("data: [DONE]"):
            return CheckResult(
                False, f"stream did not end with data: [DONE]: {text[-200:]!r}", cache
            )
        return CheckResult(True, f"{text.count('data: ')} SSE events", cache)
    try:
        parsed = json.loads(text)
        content = parsed["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return CheckResult(False, f"not a chat completion: {text[:300]}", cache)
    return CheckResult(True, f"content={content!r}", cache)


def wait_ready(procs: ProcessGroup, name: str, target: Target, timeout: float) -> CheckResult:
    """Poll with real requests until the target answers, its process dies, or time runs out."""
    deadline = time.monotonic() + timeout
    last = CheckResult(False, "not started")
    while time.monotonic() < deadline:
        code = procs.exited(name)
        if code is not None:
            return CheckResult(False, f"process exited with code {code}")
        last = check_target(target, "json", timeout=5.0)
        if last.ok:
            return last
        if last.detail.startswith("HTTP"):  # it answers, just not with a 200: no use waiting
            return last
        time.sleep(0.2)
    return CheckResult(False, f"not ready after {timeout:.0f} s ({last.detail})")


# --------------------------------------------------------------------------- wrk

# Latency is timed in Lua (LuaJIT ffi, CLOCK_MONOTONIC) from request() to response(), one
# connection per wrk thread so each thread's single in-flight request owns its start time.
# wrk's own latency histogram is not used: this wrk (Debian 4.1.0) records samples that add
# up to several times the wall time on a single connection (mean x req/s >> 1), while these
# add up to the run's duration, as a closed loop must.
LUA_TEMPLATE = r"""-- generated by bench/gateway.py
local ffi = require("ffi")
ffi.cdef[[
typedef struct {{ long tv_sec; long tv_nsec; }} bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end

local path = "{path}"
local headers = {{
  ["Content-Type"] = "application/json",
  ["Authorization"] = "Bearer {api_key}",
}}
local prefix = [==[{prefix}]==]
local suffix = [==[{suffix}]==]
local threads = {{}}
local started = 0
hist = {{}}
samples = 0

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

{request_fn}

request = function()
  started = now_us()
  return next_request()
end

response = function(status, headers, body)
  local us = math.floor(now_us() - started)
  hist[us] = (hist[us] or 0) + 1
  samples = samples + 1
end

function done(summary, latency, requests)
  local merged, total, sum = {{}}, 0, 0
  for _, thread in ipairs(threads) do
    for us, n in pairs(thread:get("hist")) do
      merged[us] = (merged[us] or 0) + n
      total = total + n
      sum = sum + us * n
    end
  end
  local keys = {{}}
  for us, _ in pairs(merged) do table.insert(keys, us) end
  table.sort(keys)
  local function pct(p)
    local want, seen = total * p / 100, 0
    for _, us in ipairs(keys) do
      seen = seen + merged[us]
      if seen >= want then return us end
    end
    return keys[#keys] or 0
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {{"requests":%.0f,"samples":%.0f,"duration_us":%.0f,"bytes":%.0f,' ..
    '"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f,' ..
    '"mean_us":%.1f,"max_us":%.0f,"p50_us":%.0f,"p90_us":%.0f,"p95_us":%.0f,"p99_us":%.0f,' ..
    '"wrk_mean_us":%.1f,"wrk_p99_us":%.0f}}\n',
    summary.requests, total, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    total > 0 and sum / total or 0, keys[#keys] or 0, pct(50), pct(90), pct(95), pct(99),
    latency.mean, latency:percentile(99)))
end
"""

LUA_UNIQUE = """local counter = 0
function next_request()
  counter = counter + 1
  local body = prefix .. string.format("%02d-%010d", tid, counter) .. suffix
  return wrk.format("POST", path, headers, body)
end"""

LUA_SAME = """local same = nil
function next_request()
  if same == nil then
    same = wrk.format("POST", path, headers, prefix .. "00-0000000000" .. suffix)
  end
  return same
end"""


@dataclass
class Measurement:
    block: str
    server: str
    target: str
    mode: Mode
    concurrency: int
    requests: int
    duration_s: float
    rps: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int] = field(default_factory=dict)
    added_ms: dict[str, float] | None = None

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def occupancy(self) -> float:
        """Little's law: mean latency x throughput / connections; ~1 in a closed loop.

        Well above 1 means the latency samples cannot all be true (more request time than
        wall time was recorded), so the percentiles of this point are not trusted.
        """
        return self.mean_ms / 1000 * self.rps / self.concurrency

    @property
    def latency_trusted(self) -> bool:
        return self.occupancy <= OCCUPANCY_LIMIT


def write_lua(work_dir: Path, target: Target, mode: Mode, body_kind: str) -> Path:
    """A wrk script for one run. Its bodies carry a nonce of their own: the counters
    restart at 0 in every run, and without it a measured run repeated its warm-up's bodies
    (and earlier blocks' ones, the database being shared), so a third or more of the
    "unique" requests were cache hits."""
    marker = "@MARKER@"
    prefix, suffix = request_body(mode, marker).decode().split(marker)
    prefix += secrets.token_hex(4) + "-"
    script = LUA_TEMPLATE.format(
        path=CHAT_PATH,
        api_key=target.api_key,
        prefix=prefix,
        suffix=suffix,
        request_fn=LUA_UNIQUE if body_kind == "unique" else LUA_SAME,
    )
    path = work_dir / f"wrk-{target.name}-{mode}-{body_kind}.lua"
    path.write_text(script)
    return path


def run_wrk(lua: Path, target: Target, concurrency: int, duration: float) -> dict[str, float]:
    argv = [
        "wrk",
        f"-t{concurrency}",  # one connection per thread: see LUA_TEMPLATE
        f"-c{concurrency}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(lua),
        f"http://{HOST}:{target.port}/",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            return dict(json.loads(line.removeprefix("BENCH_JSON ")))
    raise RuntimeError(
        f"wrk printed no result (exit {done.returncode}): {done.stdout[-500:]} {done.stderr[-500:]}"
    )


def measure(
    block: str,
    server: str,
    target: Target,
    mode: Mode,
    concurrency: int,
    args: argparse.Namespace,
    work_dir: Path,
) -> Measurement:
    lua = write_lua(work_dir, target, mode, args.body)
    run_wrk(lua, target, concurrency, args.warmup)  # warm-up, discarded
    if args.body == "unique":  # bodies no earlier run sent ("same": the primed one)
        lua = write_lua(work_dir, target, mode, args.body)
    raw = run_wrk(lua, target, concurrency, args.duration)
    duration_s = raw["duration_us"] / 1e6
    result = Measurement(
        block=block,
        server=server,
        target=target.name,
        mode=mode,
        concurrency=concurrency,
        requests=int(raw["requests"]),
        duration_s=duration_s,
        rps=raw["requests"] / duration_s if duration_s else 0.0,
        mean_ms=raw["mean_us"] / 1000,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p95_ms=raw["p95_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        errors={
            k: int(raw[k]) for k in ("connect", "read", "write", "status", "timeout") if raw[k]
        },
    )
    print(f"  {_label(result):<44} {_figures(result)}", flush=True)
    return result


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk not found: installing it with apt-get (Debian package 'wrk') ...", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False)
        found = shutil.which("wrk")
        if found:
            return found
    sys.exit(
        "wrk is required: install it with `apt-get install -y wrk` "
        "(or your OS's package) and rerun."
    )


# --------------------------------------------------------------------------- services


@dataclass
class Run:
    args: argparse.Namespace
    procs: ProcessGroup
    work_dir: Path
    results: list[Measurement] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    def notice(self, text: str) -> None:
        self.notices.append(text)
        print(f"NOTICE: {text}", flush=True)


def server_argv(server: str, app: str, port: int) -> list[str]:
    """The same flags for the bare app and the gateway: one process, no access log."""
    if server == "daphne":
        return [str(VENV_BIN / "daphne"), "-v", "0", "-b", HOST, "-p", str(port), app]
    return [
        str(VENV_BIN / "uvicorn"),
        app,
        "--host",
        HOST,
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]


def start_upstream(run: Run) -> Target:
    port = free_port()
    argv = [sys.executable, "-m", run.args.upstream_module, "--port", str(port)]
    run.procs.start("upstream", argv, run.args.project_dir, dict(os.environ))
    target = Target("direct", port, "sk-direct-upstream-0000000000000000")
    ready = wait_ready(run.procs, "upstream", target, timeout=30)
    if not ready.ok:
        print(run.procs.log_tail("upstream"))
        sys.exit(f"fake upstream ({run.args.upstream_module}) did not come up: {ready.detail}")
    return target


def gateway_env(run: Run) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("BEASTMODE_SECRET_KEY", "bench-" + secrets.token_urlsafe(32))
    # A Fernet key is 32 random bytes, urlsafe-base64 encoded.
    env.setdefault("BEASTMODE_ENCRYPTION_KEY", base64.urlsafe_b64encode(os.urandom(32)).decode())
    if not env.get("DATABASE_URL"):
        var_dir = run.work_dir / "beastmode-var"
        var_dir.mkdir(exist_ok=True)
        env["BEASTMODE_VAR_DIR"] = str(var_dir)
    return env


def prepare_gateway(run: Run, upstream: Target, env: dict[str, str]) -> str | None:
    """migrate + load_demo; the service key, or None (with a notice) if the gateway can't run."""
    project = run.args.project_dir
    if not (project / "beastmode" / "asgi.py").exists():
        run.notice(f"{project}/beastmode/asgi.py does not exist yet: BeastMode is skipped")
        return None
    manage = [sys.executable, "manage.py"]
    steps = [
        [*manage, "migrate", "--noinput"],
        # pass-through and exact hits only: no semantic lookup on the misses
        [*manage, "load_demo", "--upstream-url", f"http://{HOST}:{upstream.port}/v1",
         "--semantic", "off"],
    ]  # fmt: skip
    output = ""
    for argv in steps:
        done = subprocess.run(
            argv, cwd=project, env=env, capture_output=True, text=True, timeout=300, check=False
        )
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
            run.notice(
                f"`{' '.join(argv[1:3])}` failed (exit {done.returncode}): BeastMode is skipped"
            )
            print("\n".join("    | " + line for line in tail))
            return None
        output = done.stdout
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if not lines:
        run.notice("load_demo printed no service key: BeastMode is skipped")
        return None
    return lines[-1]


def litellm_config(upstream: Target, master_key: str) -> str:
    # JSON is valid YAML; kept minimal and explicit for fairness: one deployment, no cache,
    # no callbacks, no database (so no spend logs / key checks against a DB).
    config = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": "openai/gpt-4o-mini",
                    "api_base": f"http://{HOST}:{upstream.port}/v1",
                    "api_key": "sk-fake-upstream",
                },
            }
        ],
        "litellm_settings": {
            "set_verbose": False,
            "json_logs": False,
            "turn_off_message_logging": True,
            "callbacks": [],
            "success_callback": [],
            "failure_callback": [],
            "cache": False,
        },
        "general_settings": {
            "master_key": master_key,
            "disable_spend_logs": True,
        },
    }
    return json.dumps(config, indent=2)


def start_litellm(run: Run, upstream: Target) -> Target | None:
    cli = LITELLM_VENV / "bin" / "litellm"
    if not cli.exists():
        run.notice(
            f"{LITELLM_VENV} not found: LiteLLM is skipped "
            "(create it: python3.11 -m venv .bench-venv-litellm && "
            f".bench-venv-litellm/bin/pip install 'litellm[proxy]=={LITELLM_PIN}')"
        )
        return None
    master_key = "sk-bench-" + secrets.token_hex(12)
    config = run.work_dir / "litellm-config.yaml"
    config.write_text(litellm_config(upstream, master_key))
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_URL", "REDIS_", "LITELLM_"))
    }
    env.update(
        {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the cost map at start-up
            "LITELLM_LOG": "ERROR",
            "LITELLM_MODE": "PRODUCTION",  # do not load a .env file
            "NO_DOCS": "True",
        }
    )
    argv = [
        str(cli),
        "--config",
        str(config),
        "--host",
        HOST,
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    run.procs.start("litellm", argv, run.work_dir, env)
    target = Target("litellm", port, master_key)
    ready = wait_ready(run.procs, "litellm", target, timeout=120)
    if not ready.ok:
        run.notice(f"LiteLLM did not come up ({ready.detail}): skipped")
        print(run.procs.log_tail("litellm"))
        run.procs.stop("litellm")
        return None
    return target


def litellm_version() -> str:
    meta = list((LITELLM_VENV / "lib").glob("python3*/site-packages/litellm-*.dist-info"))
    return (
        meta[0].name.removeprefix("litellm-").removesuffix(".dist-info")
        if meta
        else "not installed"
    )


def check_modes(run: Run, target: Target, label: str) -> bool:
    """Both modes must answer correctly before a target is measured."""
    for mode in run.args.modes:
        result = check_target(target, mode)
        cache = f", x-beastmode-cache={result.cache_header}" if result.cache_header else ""
        status = "ok" if result.ok else "FAILED"
        print(f"  check {label} {mode}: {status} ({result.detail[:120]}{cache})")
        if not result.ok:
            run.notice(f"{label} answered {mode} wrongly ({result.detail[:200]}): skipped")
            return False
    return True


def measure_block(run: Run, block: str, server: str, targets: list[Target]) -> None:
    """Every mode x concurrency, the targets back to back (the direct upstream first)."""
    for mode in run.args.modes:
        for concurrency in run.args.concurrency:
            for target in targets:
                try:
                    result = measure(
                        block, server, target, mode, concurrency, run.args, run.work_dir
                    )
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    run.notice(f"{block} {mode} c={concurrency} {target.name}: not measured: {exc}")
                    continue
                run.results.append(result)


def bench_server(
    run: Run, server: str, upstream: Target, gateway_key: str | None, env: dict[str, str]
) -> None:
    print(f"\n== {server} ==", flush=True)
    targets = [upstream]
    bare_name, gw_name = f"bare-{server}", f"beastmode-{server}"
    bare = Target("bare", free_port(), "sk-bare-000000000000000000000000")
    run.procs.start(
        bare_name, server_argv(server, "bench.bare_asgi:app", bare.port), REPO, dict(os.environ)
    )
    ready = wait_ready(run.procs, bare_name, bare, timeout=30)
    if ready.ok and check_modes(run, bare, bare_name):
        targets.append(bare)
    else:
        run.notice(f"bare app under {server} did not come up ({ready.detail})")
        print(run.procs.log_tail(bare_name))
    if gateway_key is not None:
        gateway = Target("beastmode", free_port(), gateway_key)
        run.procs.start(
            gw_name,
            server_argv(server, run.args.gateway_app, gateway.port),
            run.args.project_dir,
            env,
        )
        ready = wait_ready(run.procs, gw_name, gateway, timeout=60)
        if ready.ok and check_modes(run, gateway, gw_name):
            targets.append(gateway)
        else:
            run.notice(
                f"BeastMode under {server} did not answer correctly ({ready.detail[:300]}): skipped"
            )
            print(run.procs.log_tail(gw_name))
    try:
        measure_block(run, server, server, targets)
    finally:
        run.procs.stop(bare_name)
        run.procs.stop(gw_name)


# --------------------------------------------------------------------------- report


def _label(m: Measurement) -> str:
    return f"{m.block:<8} {m.mode:<6} c={m.concurrency:<3} {m.target}"


def _figures(m: Measurement) -> str:
    errors = f"  errors={m.errors}" if m.errors else ""
    return (
        f"{m.rps:9.0f} req/s  p50 {m.p50_ms:7.3f}  p95 {m.p95_ms:7.3f}  "
        f"p99 {m.p99_ms:7.3f} ms{errors}"
    )


def add_added_latency(results: list[Measurement]) -> None:
    direct = {(m.block, m.mode, m.concurrency): m for m in results if m.target == "direct"}
    for m in results:
        base = direct.get((m.block, m.mode, m.concurrency))
        if base is not None and m.target != "direct":
            m.added_ms = {
                "p50": m.p50_ms - base.p50_ms,
                "p95": m.p95_ms - base.p95_ms,
                "p99": m.p99_ms - base.p99_ms,
            }


def print_table(results: list[Measurement]) -> None:
    header = (
        f"{'server':<8} {'mode':<6} {'conc':>4}  {'target':<10} {'req/s':>8} "
        f"{'P50 ms':>8} {'P95 ms':>8} {'P99 ms':>8}   "
        f"{'+P50 ms':>8} {'+P95 ms':>8} {'+P99 ms':>8}  {'L':>5}  errors"
    )
    print("\n" + header)
    print("-" * len(header))
    previous: tuple[str, str, int] | None = None
    for m in results:
        key = (m.block, m.mode, m.concurrency)
        if previous is not None and key != previous:
            print()
        previous = key
        added = m.added_ms
        added_cols = (
            f"{added['p50']:8.3f} {added['p95']:8.3f} {added['p99']:8.3f}"
            if added
            else f"{'-':>8} {'-':>8} {'-':>8}"
        )
        errors = ",".join(f"{k}={v}" for k, v in m.errors.items()) or "0"
        print(
            f"{m.block:<8} {m.mode:<6} {m.concurrency:>4}  {m.target:<10} {m.rps:8.0f} "
            f"{m.p50_ms:8.3f} {m.p95_ms:8.3f} {m.p99_ms:8.3f}   {added_cols}  "
            f"{m.occupancy:5.2f}{'' if m.latency_trusted else '!'} {errors}"
        )
    print(
        "(+P.. = added latency: that percentile minus the direct upstream's "
        "at the same concurrency, measured in the same block)"
    )
    print(
        "(L = mean latency x req/s / connections, ~1 in a closed loop; '!' = above "
        f"{OCCUPANCY_LIMIT}: the samples add up to more than the wall time, so that row's "
        "percentiles are not to be trusted)"
    )


def _verdict(ok: bool, *parts: Measurement | None, latency: bool = False) -> str:
    if any(p is not None and p.error_count for p in parts):
        return "ERRORS"
    if latency and any(p is not None and not p.latency_trusted for p in parts):
        return "UNTRUSTED (L!)"
    return "PASS" if ok else "FAIL"


def print_targets(results: list[Measurement]) -> list[dict[str, object]]:
    """Ratios against the issue's targets; returns them for --json-out."""
    index = {(m.block, m.target, m.mode, m.concurrency): m for m in results}
    rows: list[dict[str, object]] = []

    def row(
        check: str, server: str, mode: str, conc: int, value: str, goal: str, verdict: str
    ) -> None:
        rows.append(
            {
                "check": check,
                "server": server,
                "mode": mode,
                "concurrency": conc,
                "value": value,
                "goal": goal,
                "verdict": verdict,
            }
        )

    servers = sorted({m.server for m in results if m.target == "beastmode"}, key=SERVERS.index)
    modes = sorted({m.mode for m in results}, key=MODES.index)
    concs = sorted({m.concurrency for m in results})
    for server in servers:
        for mode in modes:
            for conc in concs:
                gw = index.get((server, "beastmode", mode, conc))
                bare = index.get((server, "bare", mode, conc))
                litellm = index.get(("litellm", "litellm", mode, conc))
                if gw is None:
                    continue
                if bare is not None and bare.rps:
                    ratio = gw.rps / bare.rps
                    row(
                        "throughput vs bare",
                        server,
                        mode,
                        conc,
                        f"{ratio:.2f}x",
                        f">= {TARGET_THROUGHPUT_VS_BARE:.2f}x",
                        _verdict(ratio >= TARGET_THROUGHPUT_VS_BARE, gw, bare),
                    )
                if litellm is not None and litellm.rps:
                    ratio = gw.rps / litellm.rps
                    row(
                        "throughput vs LiteLLM",
                        server,
                        mode,
                        conc,
                        f"{ratio:.1f}x",
                        f">= {TARGET_THROUGHPUT_VS_LITELLM:.0f}x",
                        _verdict(ratio >= TARGET_THROUGHPUT_VS_LITELLM, gw, litellm),
                    )
                if conc == 1 and gw.added_ms is not None:
                    added = gw.added_ms["p50"]
                    row(
                        "added latency P50",
                        server,
                        mode,
                        conc,
                        f"{added:.3f} ms",
                        f"<= {TARGET_ADDED_P50_C1_MS} ms",
                        _verdict(added <= TARGET_ADDED_P50_C1_MS, gw, latency=True),
                    )
                if bare is not None:
                    gap = gw.p99_ms - bare.p99_ms
                    row(
                        "P99 minus bare P99",
                        server,
                        mode,
                        conc,
                        f"{gap:.3f} ms",
                        f"<= {TARGET_P99_VS_BARE_MS} ms",
                        _verdict(gap <= TARGET_P99_VS_BARE_MS, gw, bare, latency=True),
                    )
    if not rows:
        print("\nNo BeastMode figures: no target checks.")
        return rows
    print(
        f"\n{'check':<22} {'server':<8} {'mode':<6} {'conc':>4}  "
        f"{'value':>10}  {'target':<10} verdict"
    )
    print("-" * 78)
    for r in rows:
        print(
            f"{r['check']:<22} {r['server']:<8} {r['mode']:<6} {r['concurrency']:>4}  "
            f"{r['value']:>10}  {r['goal']:<10} {r['verdict']}"
        )
    return rows


def print_context(results: list[Measurement]) -> None:
    """Ratios that are not targets but say where the time goes."""
    index = {(m.block, m.target, m.mode, m.concurrency): m for m in results}
    lines: list[str] = []
    for m in results:
        direct = index.get((m.block, "direct", m.mode, m.concurrency))
        if m.target != "direct" and direct is not None and direct.rps:
            where = "its own uvicorn" if m.target == "litellm" else m.server
            lines.append(
                f"  {m.target:<9} under {where:<15} {m.mode:<6} c={m.concurrency:<3} "
                f"{m.rps / direct.rps:6.3g}x the direct upstream's req/s"
            )
    if lines:
        print("\nFor context:")
        print("\n".join(lines))


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds measured per point (default 10)"
    )
    parser.add_argument(
        "--warmup", type=float, default=None, help="warm-up seconds per point (default 2, quick 1)"
    )
    parser.add_argument(
        "--servers", default="daphne,uvicorn", help="comma-separated: daphne,uvicorn"
    )
    parser.add_argument(
        "--concurrency", default="1,16", help="comma-separated connection counts (default 1,16)"
    )
    parser.add_argument("--modes", default="json,stream", help="comma-separated: json,stream")
    parser.add_argument(
        "--quick", action="store_true", help="3 s per point, 1 s warm-up (smoke run)"
    )
    parser.add_argument(
        "--body",
        choices=("unique", "same"),
        default="unique",
        help="unique: per-request counter, defeats exact caching (default); same: identical bodies",
    )
    parser.add_argument("--no-litellm", action="store_true", help="skip LiteLLM's proxy")
    parser.add_argument(
        "--no-gateway",
        action="store_true",
        help="skip BeastMode (upstream, bare app, LiteLLM only)",
    )
    parser.add_argument(
        "--json-out", type=Path, default=None, help="also write all figures to this JSON file"
    )
    parser.add_argument(
        "--project-dir",
        type=Path,
        default=REPO,
        help="BeastMode checkout to run (default: this one)",
    )
    parser.add_argument(
        "--gateway-app", default="beastmode.asgi:application", help="ASGI path of the gateway"
    )
    parser.add_argument(
        "--upstream-module",
        default="devtools.fake_upstream",
        help="module run as the fake upstream",
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the work dir with the subprocess logs"
    )
    args = parser.parse_args(argv)
    if args.quick and args.duration == 10.0:
        args.duration = 3.0
    if args.warmup is None:
        args.warmup = 1.0 if args.quick else 2.0
    args.servers = [s for s in args.servers.split(",") if s]
    args.modes = [m for m in args.modes.split(",") if m]
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c]
    args.project_dir = args.project_dir.resolve()
    for server in args.servers:
        if server not in SERVERS:
            parser.error(f"unknown server {server!r}; choose from {', '.join(SERVERS)}")
    for mode in args.modes:
        if mode not in MODES:
            parser.error(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    return args


def _raise_exit(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def work_directory(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="beastmode-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"\nlogs kept in {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def _versions() -> str:
    parts = [f"python {platform.python_version()}"]
    for module in ("daphne", "uvicorn", "django"):
        try:
            parts.append(f"{module} {__import__(module).__version__}")
        except (ImportError, AttributeError):
            parts.append(f"{module} ?")
    try:
        wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
        parts.append((wrk.stdout + wrk.stderr).split("Copyright")[0].strip() or "wrk ?")
    except FileNotFoundError:
        parts.append("wrk not installed")
    parts.append(f"litellm {litellm_version()}")
    return ", ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    ensure_wrk()
    signal.signal(signal.SIGTERM, _raise_exit)
    signal.signal(signal.SIGHUP, _raise_exit)
    given = list(argv) if argv is not None else sys.argv[1:]
    rerun = "  " + shlex.join([".venv/bin/python", "bench/gateway.py", *given])
    print(
        f"BeastMode gateway benchmark: {args.duration:g} s per point "
        f"after {args.warmup:g} s warm-up, body={args.body}, one wrk thread per connection"
    )
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; {_versions()}")
    with work_directory(args.keep_logs) as work_dir:
        run = Run(args=args, procs=ProcessGroup(work_dir), work_dir=work_dir)
        try:
            upstream = start_upstream(run)
            print(f"fake upstream on :{upstream.port}")
            env = gateway_env(run)
            key = None if args.no_gateway else prepare_gateway(run, upstream, env)
            for server in args.servers:
                bench_server(run, server, upstream, key, env)
            if not args.no_litellm:
                print("\n== litellm ==", flush=True)
                litellm = start_litellm(run, upstream)
                if litellm is not None and check_modes(run, litellm, "litellm"):
                    try:
                        measure_block(run, "litellm", "uvicorn", [upstream, litellm])
                    finally:
                        run.procs.stop("litellm")
        finally:
            run.procs.stop_all()
        add_added_latency(run.results)
        print_table(run.results)
        checks = print_targets(run.results)
        print_context(run.results)
        for text in run.notices:
            print(f"NOTICE: {text}")
        if args.json_out is not None:
            args.json_out.parent.mkdir(parents=True, exist_ok=True)
            args.json_out.write_text(
                json.dumps(
                    {
                        "args": {k: str(v) for k, v in vars(args).items()},
                        "versions": _versions(),
                        "results": [asdict(m) for m in run.results],
                        "checks": checks,
                    },
                    indent=2,
                )
            )
            print(f"figures written to {args.json_out}")
        print(f"\nRerun:\n{rerun}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
