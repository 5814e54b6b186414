"""A streamed answer serves plain requests and a plain answer serves streams, losing nothing:
the legacy function_call, a refusal, logprobs and the system_fingerprint, as the SDK reads them.
"""

import json
from collections.abc import Callable
from typing import Any

import openai
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion

from cache.models import CacheEntry
from cache.streams import StreamAssembler
from devtools.fake_upstream import FINGERPRINT
from tests.personas import Client, ModelFactory
from tests.processes import Process, wait_until

pytestmark = pytest.mark.embedded

WEATHER = {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}

# What a client asks for, as (fake upstream mode, request fields), and the field it relies on.
ASKS: dict[str, tuple[str, dict[str, Any]]] = {
    "function_call": ("", {"functions": [WEATHER]}),
    "refusal": ("refuse", {}),
    "logprobs": ("", {"logprobs": True}),
    "system_fingerprint": ("", {}),
}


def sdk(gateway: Process, client: Client) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=client.key, max_retries=0)


def streamed(api: openai.OpenAI, **request: Any) -> tuple[str, ChatCompletion]:
    """The cache outcome, and the stream as the SDK's own accumulator assembles it."""
    state: ChatCompletionStreamState[None] = ChatCompletionStreamState()
    with api.chat.completions.with_streaming_response.create(stream=True, **request) as response:
        for chunk in response.parse():
            state.handle_chunk(chunk)
        return response.headers["x-beastmode-cache"], state.get_final_completion()


def plain(api: openai.OpenAI, **request: Any) -> tuple[str, ChatCompletion]:
    response = api.chat.completions.with_raw_response.create(**request)
    return response.headers["x-beastmode-cache"], response.parse()


def answer(completion: ChatCompletion) -> dict[str, Any]:
    """What a client reads from an answer (not ids or timestamps)."""
    choice = completion.choices[0]
    return {
        "content": choice.message.content,
        "refusal": choice.message.refusal,
        "function_call": choice.message.function_call and choice.message.function_call.to_dict(),
        "logprobs": choice.logprobs and choice.logprobs.to_dict(),
        "finish_reason": choice.finish_reason,
        "system_fingerprint": completion.system_fingerprint,
    }


def reaches_the_database(model: str) -> None:
    # (before the test's database is flushed: a late write would outlive the test)
    wait_until(lambda: CacheEntry.objects.filter(model=model).count() == 1)


def check_the_upstream_answered(field: str, first: dict[str, Any]) -> None:
    """The answer the cache stored has the field, so comparing with it means something."""
    assert first[field] is not None
    assert first["system_fingerprint"] == FINGERPRINT
    if field == "function_call":
        assert first["function_call"]["name"] == "get_weather"
        assert json.loads(first["function_call"]["arguments"])["text"].endswith("weather?")
        assert first["finish_reason"] == "function_call" and first["content"] is None
    if field == "refusal":
        assert first["content"] is None
    if field == "logprobs":
        tokens = "".join(token["token"] for token in first["logprobs"]["content"])
        assert tokens == first["content"]


@pytest.mark.parametrize("field", ASKS)
@pytest.mark.parametrize(
    ("first_ask", "then_ask"),
    [(streamed, plain), (plain, streamed)],
    ids=["a streamed answer serves a plain request", "a plain answer replays as a stream"],
)
def test_a_cached_answer_keeps_the_field_in_the_other_mode(
    field: str,
    first_ask: Callable[..., tuple[str, Any]],
    then_ask: Callable[..., tuple[str, Any]],
    gateway: Process,
    alice: Client,
    model_with: ModelFactory,
) -> None:
    mode, fields = ASKS[field]
    api = sdk(gateway, alice)
    request = {"model": model_with(mode), "messages": [{"role": "user", "content": "weather?"}]}

    outcome, first = first_ask(api, **request, **fields)
    check_the_upstream_answered(field, answer(first))
    hit_outcome, hit = then_ask(api, **request, **fields)

    assert (outcome, hit_outcome) == ("miss", "exact")
    assert answer(hit) == answer(first)
    reaches_the_database(request["model"])


def test_a_stream_with_a_field_the_assembler_cannot_merge_is_not_lossless() -> None:
    # Streamed audio arrives in pieces the assembler does not merge: the gateway stores
    # only lossless answers, or this one would come back without its audio.
    assembler = StreamAssembler()
    assembler.add({"id": "c", "choices": [{"index": 0, "delta": {"content": "Hi"}}]})
    assert assembler.lossless
    assembler.add({"id": "c", "choices": [{"index": 0, "delta": {"audio": {"id": "a1"}}}]})
    assert not assembler.lossless
