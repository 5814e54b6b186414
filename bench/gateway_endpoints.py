"""What bench/gateway.py measures: a ``Target`` answering POST /v1/chat/completions, the
request body every target gets, and a one-off request that checks an answer is a real
completion before the target is measured.

Shared by the other ``bench/gateway_*`` modules (and by bench/cache*.py through
bench/gateway.py), so the constants of the run (host, path, model) live here.
"""

from __future__ import annotations

import http.client
import json
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

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
