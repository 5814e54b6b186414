"""Hypothesis strategies for hostile API requests: bodies, headers, methods and paths drawn
from the OpenAI chat completions request schema and from its violations (wrong types for
every field, deep nesting, lone surrogates, NUL, huge and non-finite numbers, unknown
fields, bad methods, broken JSON). Used by tests/gateway/test_fuzz.py (in-process) and
bench/fuzz.py (over HTTP). Needs hypothesis (requirements-dev.txt)."""

import json
import uuid
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

# Text with what breaks storage and encoders: NUL, lone surrogates, controls, non-BMP.
_NASTY_CHARS = ["\x00", "\ud800", "\udfff", "\x7f", "\u2028", "\U0001f600", "'", '"', "\\"]
nasty_text = st.one_of(
    st.text(max_size=20),
    st.lists(st.sampled_from(_NASTY_CHARS) | st.text(max_size=3), max_size=6).map("".join),
    st.just("x" * 300),
)
huge_numbers = st.sampled_from(
    [10**30, -(10**30), 2**63, -(2**63) - 1, 1e308, -1e308, 0.1, -0.0, 10**4000]
)
_NON_FINITE = "__non_finite__"  # written as a NaN / Infinity literal by `encode`
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    huge_numbers,
    nasty_text,
    st.sampled_from([_NON_FINITE + "NaN", _NON_FINITE + "Infinity", _NON_FINITE + "-Infinity"]),
)
any_json = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(nasty_text, children, max_size=4)
    ),
    max_leaves=12,
)

ROLES = ["system", "developer", "user", "assistant", "tool", "function"]
_content_part = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=20)}),
    st.fixed_dictionaries(
        {
            "type": st.just("image_url"),
            "image_url": st.fixed_dictionaries({"url": st.text(max_size=10)}),
        }
    ),
    any_json,
)
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(ROLES), "content": st.text(min_size=1, max_size=30)},
    optional={"name": st.text(max_size=10)},
)
hostile_message = st.one_of(
    _message,
    st.fixed_dictionaries({"role": any_json, "content": any_json}),
    st.fixed_dictionaries(
        {"role": st.sampled_from(ROLES), "content": st.lists(_content_part, max_size=3)}
    ),
    any_json,
)
# Optional parameters with values in range, as a well-behaved client sends them.
_VALID_PARAMETERS: dict[str, st.SearchStrategy[Any]] = {
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0, 1),
    "n": st.integers(1, 3),
    "max_tokens": st.integers(1, 4096),
    "max_completion_tokens": st.integers(1, 4096),
    "presence_penalty": st.floats(-2, 2),
    "frequency_penalty": st.floats(-2, 2),
    "stop": st.one_of(st.text(max_size=5), st.lists(st.text(max_size=5), max_size=4)),
    "logit_bias": st.dictionaries(
        st.integers(0, 100000).map(str), st.integers(-100, 100), max_size=3
    ),
    "seed": st.integers(-(2**63), 2**63 - 1),
    "user": st.text(max_size=20),
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "logprobs": st.booleans(),
    "top_logprobs": st.integers(0, 20),
}
# Fields a body can carry: the schema's, BeastMode's own, forbidden routing ones, unknown.
FIELDS = [
    "model",
    "messages",
    *_VALID_PARAMETERS,
    "tools",
    "tool_choice",
    "response_format",
    "metadata",
    "cache",
    "api_base",
    "x_unknown_field",
]


@dataclass(frozen=True)
class HostileRequest:
    """One request: the path is decoded text, as an ASGI server hands it to the app."""

    method: str
    path: str
    headers: list[tuple[bytes, bytes]]
    body: bytes

    @property
    def request_id(self) -> str | None:
        """The x-request-id this request sends, if any."""
        for name, value in self.headers:
            if name == b"x-request-id":
                return value.decode("latin-1")
        return None


def encode(body: Any) -> bytes:
    """JSON as a careless client writes it: lone surrogates as escapes, NaN and Infinity
    as bare literals, integers of any size."""
    text = json.dumps(body, allow_nan=True)
    for literal in ("NaN", "-Infinity", "Infinity"):
        text = text.replace(f'"{_NON_FINITE}{literal}"', literal)
    return text.encode()


@st.composite
def chat_bodies(draw: st.DrawFn, model: str) -> bytes:
    """A chat completion body: valid, or with some fields of the wrong type or out of
    range, unknown fields, deep nesting; or bytes that are not JSON at all."""
    kind = draw(st.sampled_from(["valid", "mutated", "mutated", "mutated", "raw", "deep"]))
    if kind == "raw":
        return draw(
            st.one_of(
                st.binary(max_size=40),
                st.sampled_from(
                    [
                        b"",
                        b"{",
                        b"null",
                        b"[]",
                        b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}',
                        f'{{"model": "{model}", "messages": [{{"role": "user", "content": "hi"}}], '
                        '"temperature": NaN}'.encode(),
                        b'{"model": "\\u0000"}',
                    ]
                ),
            )
        )
    body: dict[str, Any] = {
        "model": draw(st.sampled_from([model, model, "no-such-model"]) | nasty_text),
        "messages": draw(st.lists(_message, min_size=1, max_size=3)),
    }
    for name in draw(st.lists(st.sampled_from(list(_VALID_PARAMETERS)), max_size=3, unique=True)):
        body[name] = draw(_VALID_PARAMETERS[name])
    if kind == "deep":
        depth = draw(st.sampled_from([10, 63, 65, 200, 1000, 1025, 5000]))
        body["messages"][0]["content"] = "DEEP"
        return encode(body).replace(b'"DEEP"', b"[" * depth + b"]" * depth)
    if kind == "mutated":
        for name in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3, unique=True)):
            body[name] = draw(any_json)
        if draw(st.booleans()):
            body["messages"] = draw(st.lists(hostile_message, max_size=3))
    return encode(body)


_API_PATHS = ["/v1/chat/completions", "/chat/completions", "/v1/models", "/models"]
_METHODS = ["POST", "POST", "POST", "GET", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND"]


@st.composite
def paths(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["chat", "chat", "chat", "chat", "api", "job", "other"]))
    if kind == "chat":
        return draw(st.sampled_from(_API_PATHS[:2]))
    if kind == "api":
        return draw(st.sampled_from(_API_PATHS))
    suffix = draw(nasty_text | st.just("job_" + "0" * 24))
    if kind == "job":
        return draw(st.sampled_from(["/v1/jobs/", "/jobs/"])) + suffix
    return "/v1/" + suffix


@st.composite
def methods(draw: st.DrawFn) -> str:
    """HTTP method tokens, the API's and others, some longer than any known one."""
    return draw(
        st.sampled_from(_METHODS)
        | st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ-", min_size=1, max_size=40)
    )


@st.composite
def header_sets(draw: st.DrawFn, key: str) -> list[tuple[bytes, bytes]]:
    """Headers: the key right, wrong or missing; a fresh x-request-id or garbage (the
    gateway then makes its own); odd cache controls and content types."""
    latin1 = st.text(
        alphabet=st.characters(max_codepoint=255, exclude_characters="\r\n"), max_size=30
    )
    # Mostly the right key: the body checks are behind the key check.
    roll = draw(st.integers(0, 9))
    if roll < 7:
        authorization = f"Bearer {key}"
    elif roll < 9:
        authorization = draw(st.sampled_from(["Bearer sk-wrong", "", "Basic x"]))
    else:
        authorization = "Bearer " + draw(latin1)
    headers = [(b"authorization", authorization.encode("latin-1"))] if authorization else []
    request_id = draw(st.sampled_from(["fresh", "fresh", "garbage"]))
    if request_id == "fresh":
        headers.append((b"x-request-id", f"fuzz-{uuid.uuid4().hex}".encode()))
    else:
        # Never a usable id (a space in it), so ids stay unique per request.
        headers.append((b"x-request-id", ("bad id " + draw(latin1)).encode("latin-1")))
    if draw(st.booleans()):
        headers.append(
            (
                b"content-type",
                draw(st.sampled_from(["application/json", "text/plain"]) | latin1).encode(
                    "latin-1"
                ),
            )
        )
    if draw(st.integers(0, 4)) == 0:
        headers.append(
            (
                b"cache-control",
                draw(st.sampled_from(["no-cache", "no-store", "max-age=10"]) | latin1).encode(
                    "latin-1"
                ),
            )
        )
    if draw(st.integers(0, 9)) == 0:  # in-process only: bench/fuzz.py sends the true one
        odd = st.sampled_from(["\u00b2", "-1", "9" * 30, "9" * 5000, "abc", "0"])
        headers.append((b"content-length", draw(odd).encode("latin-1")))
    return headers


@st.composite
def hostile_requests(draw: st.DrawFn, *, model: str, key: str) -> HostileRequest:
    """A request for an API path; `model` is a model the `key` may use."""
    path = draw(paths())
    method = "POST" if path.endswith("/chat/completions") else "GET"
    if draw(st.integers(0, 5)) == 0:
        method = draw(methods())
    return HostileRequest(
        method=method,
        path=path,
        headers=draw(header_sets(key)),
        body=draw(chat_bodies(model)) if method == "POST" else b"",
    )
