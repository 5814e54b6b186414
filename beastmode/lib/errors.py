"""Every failure BeastMode reports: its class, HTTP status, OpenAI error type and tips."""

from dataclasses import dataclass, field
from typing import Any

from beastmode.lib import redaction


@dataclass(frozen=True)
class ErrorKind:
    error_class: str
    status: int
    type: str
    tips: tuple[str, ...] = ()
    # Worth another attempt on the same endpoint (after backoff).
    retryable: bool = False
    # Counts towards opening the endpoint's circuit breaker.
    endpoint_fault: bool = False


# For a client's own service key (401s).
_NEW_KEY = (
    "Ask a BeastMode admin for a service key (admin → Service keys → Add); "
    "it is shown once, when it is made.",
)
_SEND_KEY = (
    "Send the service key as 'Authorization: Bearer <key>' "
    "(the openai SDK does this with api_key=...).",
    *_NEW_KEY,
)
_WRONG_KEY = (
    "Check that the whole key was copied: BeastMode service keys start with 'bm-'.",
    "Check that the client talks to this BeastMode (base_url), not another gateway.",
    *_NEW_KEY,
)
_CHECK_KEY = (
    "Check the endpoint's API key in BeastMode admin (Model endpoints → API key).",
    "Check that the key is still valid (not revoked, expired or out of credit).",
    "Check that the key has permission for this model.",
)
_CHECK_URL = (
    "Verify the endpoint's base URL in BeastMode admin.",
    "Check that the endpoint is reachable from the BeastMode host.",
    "Check the path: most OpenAI-compatible servers expect the base URL to end in /v1.",
)
_SERVER_DOWN = (
    "Verify the endpoint's base URL (host and port).",
    "Check that the upstream server is running.",
    "Check the network between BeastMode and the endpoint (firewall, proxy, container network).",
)
_TIMEOUT = (
    "The endpoint may be overloaded: retry later or add a fallback endpoint to the route.",
    "Raise the endpoint's timeout in BeastMode admin if its answers are legitimately slow.",
    "Use a smaller or faster model for this route.",
)

KINDS: dict[str, ErrorKind] = {
    kind.error_class: kind
    for kind in [
        # The client's own request.
        ErrorKind("invalid_json", 400, "invalid_request_error"),
        ErrorKind("invalid_request", 400, "invalid_request_error"),
        ErrorKind("forbidden_field", 400, "invalid_request_error"),
        ErrorKind("body_too_large", 413, "invalid_request_error"),
        ErrorKind("json_too_deep", 400, "invalid_request_error"),
        ErrorKind("missing_api_key", 401, "authentication_error", _SEND_KEY),
        ErrorKind("invalid_api_key", 401, "authentication_error", _WRONG_KEY),
        ErrorKind("revoked_api_key", 401, "authentication_error", _NEW_KEY),
        ErrorKind("expired_api_key", 401, "authentication_error", _NEW_KEY),
        ErrorKind("model_not_found", 404, "invalid_request_error"),
        ErrorKind("job_not_found", 404, "invalid_request_error"),
        ErrorKind("path_not_found", 404, "invalid_request_error"),
        ErrorKind(
            "method_not_allowed",
            405,
            "invalid_request_error",
            ("The API takes POST /v1/chat/completions, GET /v1/models and GET /v1/jobs/<id>.",),
        ),
        # Upstream failures.
        ErrorKind("upstream_bad_request", 400, "invalid_request_error"),
        ErrorKind("upstream_auth", 502, "upstream_error", _CHECK_KEY, endpoint_fault=True),
        ErrorKind("upstream_not_found", 502, "upstream_error", _CHECK_URL, endpoint_fault=True),
        ErrorKind(
            "upstream_rate_limited",
            429,
            "rate_limit_error",
            (
                "The endpoint is rate limiting: retry after the time in Retry-After.",
                "Add a fallback endpoint to the route, or raise the upstream quota.",
            ),
            retryable=True,
            endpoint_fault=True,
        ),
        ErrorKind(
            "upstream_server_error",
            502,
            "upstream_error",
            (
                "The endpoint has a problem of its own: retry the request.",
                "Check the endpoint's status page or server logs.",
                "Add a fallback endpoint to the route so callers are served meanwhile.",
            ),
            retryable=True,
            endpoint_fault=True,
        ),
        ErrorKind(
            "connection_refused", 502, "upstream_error", _SERVER_DOWN, True, endpoint_fault=True
        ),
        ErrorKind(
            "connection_error", 502, "upstream_error", _SERVER_DOWN, True, endpoint_fault=True
        ),
        ErrorKind(
            "dns_failure",
            502,
            "upstream_error",
            (
                "Check the host name in the endpoint's base URL for typos.",
                "Check that DNS resolves that name from the BeastMode host.",
            ),
            retryable=True,
            endpoint_fault=True,
        ),
        ErrorKind(
            "tls_error",
            502,
            "upstream_error",
            (
                "Check the scheme: use http:// for servers without TLS, https:// for TLS.",
                "Check the endpoint's certificate (expired, self-signed, wrong host name).",
            ),
            endpoint_fault=True,
        ),
        ErrorKind("connect_timeout", 504, "timeout_error", _TIMEOUT, True, endpoint_fault=True),
        ErrorKind("first_byte_timeout", 504, "timeout_error", _TIMEOUT, True, endpoint_fault=True),
        ErrorKind("total_timeout", 504, "timeout_error", _TIMEOUT, True, endpoint_fault=True),
        ErrorKind(
            "request_timeout",
            504,
            "timeout_error",
            (
                "The model's timeout (retries and fallbacks included) ran out: raise it in"
                " BeastMode admin if its answers are legitimately slow,",
                "or put a faster endpoint first in its route.",
            ),
        ),
        ErrorKind(
            "invalid_upstream_response",
            502,
            "upstream_error",
            (
                "The endpoint did not answer in the OpenAI format: check it is OpenAI-compatible.",
                "Check the base URL points at the API, not at a web page or proxy.",
            ),
            retryable=True,
            endpoint_fault=True,
        ),
        ErrorKind(
            "stream_interrupted",
            502,
            "upstream_error",
            ("The endpoint cut the stream: retry the request.",),
            endpoint_fault=True,
        ),
        ErrorKind(
            "circuit_open",
            503,
            "service_unavailable",
            (
                "Every endpoint of this model failed repeatedly and is cooling down.",
                "Retry after the time in Retry-After; check the endpoints in /monitoring.",
            ),
        ),
        ErrorKind(
            "queue_unavailable",
            503,
            "service_unavailable",
            (
                "The job queue (Redis) is unreachable: the job was not created. Retry in a"
                " few seconds, or send the request without X-BeastMode-Async.",
            ),
        ),
        ErrorKind(
            "database_unavailable",
            503,
            "service_unavailable",
            (
                "Async jobs need BeastMode's database, which is unavailable: retry in a few"
                " seconds, or send the request without X-BeastMode-Async.",
            ),
        ),
        ErrorKind(
            "job_abandoned",
            500,
            "server_error",
            (
                "The workers that ran this job stopped before it ended (killed or"
                " restarted), too many times. Submit it again.",
            ),
        ),
        ErrorKind(
            "config_unavailable",
            503,
            "service_unavailable",
            (
                "This server has not loaded its configuration yet: the database is"
                " unreachable. Retry in a few seconds.",
                "Operators: check /health/readiness and the database.",
            ),
        ),
        ErrorKind(
            "rate_limit_exceeded",
            429,
            "requests",
            (
                "Retry after the time in Retry-After; x-ratelimit-* headers show what is left.",
                "Ask the gateway's admin to raise this service key's limits if it needs more.",
            ),
        ),
        ErrorKind(
            "insufficient_quota",
            429,
            "insufficient_quota",
            (
                "GET /v1/key/info shows the key's budget, its spend and when it resets.",
                "Ask the gateway's admin to raise this service key's budget.",
            ),
        ),
        ErrorKind(
            "limits_unavailable",
            503,
            "service_unavailable",
            ("Retry shortly: the gateway's Redis is being restored.",),
            True,
        ),
        ErrorKind(
            "no_endpoint",
            503,
            "service_unavailable",
            ("Add an enabled endpoint to this model's route in BeastMode admin.",),
        ),
        ErrorKind(
            "internal_error",
            500,
            "server_error",
            ("This is a BeastMode bug: retry, and report it with the x-request-id.",),
        ),
    ]
}


@dataclass
class GatewayError(Exception):
    error_class: str
    message: str
    param: str | None = None
    retry_after_s: float | None = None
    upstream_status: int | None = None
    extra_tips: list[str] = field(default_factory=list)
    error_type: str | None = None  # instead of the kind's (OpenAI's "requests", "tokens")
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # sent with the error

    def __post_init__(self) -> None:
        super().__init__(self.message)

    @property
    def kind(self) -> ErrorKind:
        return KINDS[self.error_class]

    @property
    def status(self) -> int:
        return self.kind.status

    @property
    def tips(self) -> list[str]:
        return [*self.kind.tips, *self.extra_tips]

    def to_body(self) -> dict[str, Any]:
        """The OpenAI error object, with BeastMode's tips; redacted, as it leaves the process
        (to a client or an async job's stored result)."""
        error: dict[str, Any] = {
            "message": redaction.redact(self.message),
            "type": self.error_type or self.kind.type,
            "param": self.param,
            "code": self.error_class,
        }
        if self.tips:
            error["tips"] = [redaction.redact(tip) for tip in self.tips]
        return {"error": error}
