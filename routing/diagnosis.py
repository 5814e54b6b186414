"""Turn an upstream failure into a classified GatewayError that says what to do."""

import socket
import ssl
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from time import time

from beastmode.lib import redaction
from beastmode.lib.errors import GatewayError
from routing import http_client
from routing.registry import EndpointConfig


def from_status(
    *,
    model_name: str,
    endpoint: EndpointConfig,
    status: int,
    upstream_message: str,
    retry_after_s: float | None,
) -> GatewayError:
    if status in (401, 403):
        error_class = "upstream_auth"
    elif status == 404:
        error_class = "upstream_not_found"
    elif status == 429:
        error_class = "upstream_rate_limited"
    elif status in (400, 413, 422):
        error_class = "upstream_bad_request"
    elif status >= 500 or status == 408:
        error_class = "upstream_server_error"
    else:
        error_class = "invalid_upstream_response"
    reason = _reason(status)
    message = (
        f"Model '{model_name}': endpoint {endpoint.label} answered HTTP {status} {reason}".rstrip()
        + "."
    )
    if upstream_message:
        message += f" Upstream said: {scrub(upstream_message, endpoint)}"
    return GatewayError(error_class, message, upstream_status=status, retry_after_s=retry_after_s)


def from_exception(
    *, model_name: str, endpoint: EndpointConfig, exc: BaseException, phase: str
) -> GatewayError:
    """`phase` is where a timeout struck: 'first_byte' or 'total'."""
    error_class, what = _classify_exception(exc, phase)
    if error_class in ("first_byte_timeout", "total_timeout"):
        what += f"; its total timeout is {endpoint.total_timeout_s:g} s, retries included"
    message = f"Model '{model_name}': endpoint {endpoint.label} {what}."
    return GatewayError(error_class, message)


def invalid_response(*, model_name: str, endpoint: EndpointConfig, why: str) -> GatewayError:
    return GatewayError(
        "invalid_upstream_response",
        f"Model '{model_name}': endpoint {endpoint.label} sent an invalid response: "
        f"{scrub(why, endpoint)}.",
    )


def _classify_exception(exc: BaseException, phase: str) -> tuple[str, str]:
    if isinstance(exc, http_client.ConnectTimeout):
        return "connect_timeout", "did not accept a connection in time (connect timeout)"
    if isinstance(exc, TimeoutError):
        if phase == "first_byte":
            return "first_byte_timeout", "sent no first byte in time (first-byte timeout)"
        return "total_timeout", "did not finish in time (total timeout)"
    if isinstance(exc, socket.gaierror):
        return "dns_failure", "has a host name that does not resolve (DNS failure)"
    if isinstance(exc, ssl.SSLError):
        return "tls_error", "failed the TLS handshake"
    if isinstance(exc, ConnectionRefusedError):
        return "connection_refused", "refused the connection (nothing listens there)"
    if isinstance(exc, http_client.ServerDisconnected):
        return "connection_error", "closed the connection without answering"
    if isinstance(exc, http_client.MalformedResponse):
        return "invalid_upstream_response", "sent a malformed HTTP response"
    if isinstance(exc, OSError):
        why = exc.strerror or type(exc).__name__
        return "connection_error", f"failed at the connection level ({why})"
    return "invalid_upstream_response", f"failed unexpectedly ({type(exc).__name__})"


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Seconds from `retry-after-ms` or `Retry-After` (seconds or an HTTP date); header
    names in lower case, as routing.http_client gives them."""
    get = headers.get
    if (ms := get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time())
    except (TypeError, ValueError):
        return None


def scrub(text: str, endpoint: EndpointConfig) -> str:
    """Upstream text, where it enters, without a fragment of any upstream key (this
    endpoint's too, however its config was made) or anything shaped like a key."""
    redaction.remember((endpoint.api_key,))
    # Cut first: redaction then pays for 500 characters at most (the cut leaves no run
    # of 8 key characters that redaction would not see).
    return redaction.redact(text[:500])


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
