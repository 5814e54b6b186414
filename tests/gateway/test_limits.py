"""Service keys' limits through the openai SDK, as a client sees them."""

import openai
import pytest

from tests.personas import Client, ModelFactory, make_client, record_for, wait_for_key
from tests.processes import Process


def sdk(gateway: Process, client: Client) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=client.key, max_retries=0)


def ask(api: openai.OpenAI, model: str, text: str) -> openai.types.chat.ChatCompletion:
    return api.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}]
    )


@pytest.mark.django_db(transaction=True)
def test_requests_per_minute(gateway: Process, model_with: ModelFactory) -> None:
    model = model_with("")
    client = wait_for_key(gateway, make_client("limited", rpm=2))
    api = sdk(gateway, client)
    first = ask(api, model, "one")
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    ask(api, model, "two")
    with pytest.raises(openai.RateLimitError) as refused:
        ask(api, model, "three")
    print(refused.value.response.headers, refused.value.body)
    assert refused.value.code == "rate_limit_exceeded"
    record = record_for(refused.value.response.headers["x-request-id"])
    assert record.outcome == "rate_limited"
