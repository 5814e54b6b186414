import pytest

from routing import diagnosis, http_client
from routing.registry import EndpointConfig

ENDPOINT = EndpointConfig(
    id=1, name="main", provider="openai", base_url="https://api.example.com/v1",
    upstream_model="gpt", api_key="sk-abcdefghijklmnop", connect_timeout_s=1,
    first_byte_timeout_s=1, total_timeout_s=1, max_retries=0, input_cost_per_1m=0,
    output_cost_per_1m=0,
)  # fmt: skip


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after-ms": "1500", "retry-after": "7"}, 1.5),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # in the past
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_reads_seconds_milliseconds_and_dates(
    headers: dict[str, str], seconds: float | None
) -> None:
    assert diagnosis.retry_after_s(headers) == seconds


def test_upstream_text_is_scrubbed_of_the_key_and_keylike_tokens() -> None:
    text = "Incorrect API key provided: sk-abcdefghijklmnop; also sk-proj-zzzzzzzzzz"
    scrubbed = diagnosis.scrub(text, ENDPOINT)
    assert "abcdefghijklmnop" not in scrubbed and "zzzzzzzzzz" not in scrubbed
    assert scrubbed.count("[redacted]") == 2


def test_a_connect_timeout_is_told_apart_from_a_first_byte_timeout() -> None:
    connect = diagnosis.from_exception(
        model_name="m", endpoint=ENDPOINT, exc=http_client.ConnectTimeout(), phase="first_byte"
    )
    first_byte = diagnosis.from_exception(
        model_name="m", endpoint=ENDPOINT, exc=TimeoutError(), phase="first_byte"
    )
    total = diagnosis.from_exception(
        model_name="m", endpoint=ENDPOINT, exc=TimeoutError(), phase="total"
    )
    assert (connect.error_class, first_byte.error_class, total.error_class) == (
        "connect_timeout", "first_byte_timeout", "total_timeout"
    )  # fmt: skip
    assert connect.status == 504 and "'main' (api.example.com)" in connect.message


@pytest.mark.parametrize(
    ("status", "error_class", "http_status", "tip"),
    [
        (400, "upstream_bad_request", 400, None),  # the caller's request: passed on as 400
        (401, "upstream_auth", 502, "API key"),
        (403, "upstream_auth", 502, "permission"),
        (404, "upstream_not_found", 502, "/v1"),
        (429, "upstream_rate_limited", 429, "Retry-After"),
        (500, "upstream_server_error", 502, "retry"),
        (503, "upstream_server_error", 502, "retry"),
    ],
)
def test_an_upstream_status_is_classified_with_what_to_do(
    status: int, error_class: str, http_status: int, tip: str | None
) -> None:
    error = diagnosis.from_status(
        model_name="m", endpoint=ENDPOINT, status=status, upstream_message="no",
        retry_after_s=None,
    )  # fmt: skip
    assert (error.error_class, error.status, error.upstream_status) == (
        error_class, http_status, status
    )  # fmt: skip
    assert f"'main' (api.example.com) answered HTTP {status}" in error.message
    assert "Upstream said: no" in error.message
    if tip is not None:
        assert any(tip in t for t in error.tips), error.tips
