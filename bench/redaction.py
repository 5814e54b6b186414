"""What `beastmode.lib.redaction.redact` costs per KB of text, with N upstream keys known.

    .venv/bin/python -m bench.redaction --keys 100

Texts: an upstream error message in English (the common case: few runs of 8 or more key
characters), JSON error bodies with ids, and the worst case, one unbroken run of key
characters (a base64 blob) holding no key. Also the cost of learning the keys, and, for
scale on a shared machine, json.loads of the same JSON (every upstream error pays it).
"""

import argparse
import json
import secrets
import string
import time
from collections.abc import Callable

from beastmode.lib import redaction

_ALPHABET = string.ascii_letters + string.digits
_ENGLISH = (
    "The model could not process your request because the input was too long for its "
    "context window; reduce the length of the messages or use a larger model. "
)


def _key(index: int) -> str:
    body = "".join(secrets.choice(_ALPHABET) for _ in range(40))
    return ("sk-proj-", "sk-", "")[index % 3] + body


def _json_errors(size_bytes: int) -> str:
    error = {"message": _ENGLISH, "type": "invalid_request_error", "param": "messages",
             "request_id": "req_" + secrets.token_hex(16), "code": "context_length"}  # fmt: skip
    body = {"error": error}
    return json.dumps([body] * (size_bytes // len(json.dumps(body)) + 1))


def _texts(size_bytes: int) -> dict[str, str]:
    return {
        "english": (_ENGLISH * (size_bytes // len(_ENGLISH) + 1))[:size_bytes],
        "json errors": _json_errors(size_bytes),
        "one run (worst)": "".join(secrets.choice(_ALPHABET) for _ in range(size_bytes)),
    }


def _per_call_us(call: Callable[[], object], min_time_s: float = 0.3) -> float:
    runs, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < min_time_s:
        call()
        runs += 1
    return elapsed / runs * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--kb", type=int, default=1, help="text size in KB")
    args = parser.parse_args()

    keys = [_key(i) for i in range(args.keys)]
    started = time.perf_counter()
    redaction.remember(keys)
    learn_ms = (time.perf_counter() - started) * 1000
    print(f"{args.keys} keys learnt in {learn_ms:.2f} ms "
          f"({len(redaction._fragments)} fragments of 8 characters)")  # fmt: skip
    print(f"{'text':<18} {'µs per call':>12} {'µs per KB':>10}")
    for name, text in _texts(args.kb * 1024).items():
        assert redaction.redact(text) == text, "no key in it: nothing to remove"
        per_call = _per_call_us(lambda text=text: redaction.redact(text))
        print(f"{name:<18} {per_call:>12.1f} {per_call / len(text) * 1024:>10.1f}")
    errors = _json_errors(args.kb * 1024)
    per_call = _per_call_us(lambda: json.loads(errors))
    print(f"{'(json.loads)':<18} {per_call:>12.1f} {per_call / len(errors) * 1024:>10.1f}")
    leaky = f"Incorrect API key provided: {keys[0][-30:]}. " * 4
    per_call = _per_call_us(lambda: redaction.redact(leaky))
    print(f"{'a quoted key':<18} {per_call:>12.1f} (for {len(leaky)} bytes)")


if __name__ == "__main__":
    main()
