"""The request record as the gateway submits it: one key per RequestRecord column but the
id. A TypedDict, so a misspelt key is a type error and a record costs no more than a dict
on the hot path."""

from datetime import datetime
from typing import Any, TypedDict

from beastmode.lib.stored_text import storable


class RequestRow(TypedDict):
    request_id: str
    created_at: datetime
    method: str
    path: str
    service_key_id: int | None
    service_key_name: str
    model: str
    endpoint: str
    stream: bool
    is_async_job: bool
    attempts: int
    fallbacks: int
    attempt_log: list[dict[str, Any]]  # routing.router.Attempt fields
    outcome: str
    status_code: int
    latency_ms: float
    upstream_latency_ms: float
    overhead_ms: float
    tokens_in: int
    tokens_out: int
    cost_usd: float
    is_warming: bool
    cache_outcome: str  # "" when the cache did not see the request
    cache_tier: str
    cache_similarity: float | None
    cache_entry_key: str
    saved_tokens_in: int
    saved_tokens_out: int
    cost_saved_usd: float
    error_class: str
    error_message: str
    error_tips: list[str]


def request_row(
    *,
    request_id: str,
    created_at: datetime,
    path: str,
    outcome: str,
    status_code: int,
    latency_ms: float,
    method: str = "POST",
    service_key_id: int | None = None,
    service_key_name: str = "",
    model: str = "",
    endpoint: str = "",
    stream: bool = False,
    is_async_job: bool = False,
    attempts: int = 0,
    fallbacks: int = 0,
    attempt_log: list[dict[str, Any]] | None = None,
    upstream_latency_ms: float = 0.0,
    overhead_ms: float = 0.0,
    tokens_in: int = 0,
    tokens_out: int = 0,
    cost_usd: float = 0.0,
    is_warming: bool = False,
    cache_outcome: str = "",
    cache_tier: str = "",
    cache_similarity: float | None = None,
    cache_entry_key: str = "",
    saved_tokens_in: int = 0,
    saved_tokens_out: int = 0,
    cost_saved_usd: float = 0.0,
    error_class: str = "",
    error_message: str = "",
    error_tips: list[str] | None = None,
) -> RequestRow:
    """A record; the defaults are RequestRecord's (tests/monitoring/test_records.py). The
    texts a client chose (method, path, model, error message) are escaped and cut to fit
    their columns: the database accepts every record (beastmode/lib/stored_text.py)."""
    return {
        "request_id": storable(request_id, 64),
        "created_at": created_at,
        "method": storable(method, 8),
        "path": storable(path, 200),
        "service_key_id": service_key_id,
        "service_key_name": storable(service_key_name, 100),
        "model": storable(model, 200),
        "endpoint": storable(endpoint, 100),
        "stream": stream,
        "is_async_job": is_async_job,
        "attempts": attempts,
        "fallbacks": fallbacks,
        "attempt_log": [] if attempt_log is None else attempt_log,
        "outcome": outcome,
        "status_code": status_code,
        "latency_ms": latency_ms,
        "upstream_latency_ms": upstream_latency_ms,
        "overhead_ms": overhead_ms,
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "cost_usd": cost_usd,
        "is_warming": is_warming,
        "cache_outcome": cache_outcome,
        "cache_tier": cache_tier,
        "cache_similarity": cache_similarity,
        "cache_entry_key": cache_entry_key,
        "saved_tokens_in": saved_tokens_in,
        "saved_tokens_out": saved_tokens_out,
        "cost_saved_usd": cost_saved_usd,
        "error_class": error_class,
        "error_message": storable(error_message),
        "error_tips": [] if error_tips is None else [storable(tip) for tip in error_tips],
    }
