"""What makes two requests the same (cache/keys.py)."""

import pytest

from cache.keys import derive

BASE = {
    "model": "demo",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2+2?"},
    ],
}


def key(body: dict, namespace: str = "key:1", model: str = "demo") -> str:
    return derive(namespace, model, body).exact


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("temperature", 0.2), ("top_p", 0.5), ("max_tokens", 10), ("max_completion_tokens", 10),
        ("n", 2), ("stop", ["\n"]), ("seed", 7), ("presence_penalty", 1), ("frequency_penalty", 1),
        ("logit_bias", {"50256": -100}), ("logprobs", True),
        ("response_format", {"type": "json_object"}),
        ("tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}]),
        ("tool_choice", "required"), ("parallel_tool_calls", False), ("reasoning_effort", "high"),
        ("some_future_parameter", 1),
    ],
)  # fmt: skip
def test_every_output_affecting_parameter_changes_the_key(name: str, value: object) -> None:
    assert key({**BASE, name: value}) != key(BASE)


@pytest.mark.parametrize(
    ("name", "value"),
    [("stream", True), ("stream_options", {"include_usage": True}), ("user", "u-42"),
     ("metadata", {"team": "x"})],
)  # fmt: skip
def test_parameters_that_do_not_change_the_output_keep_the_key(name: str, value: object) -> None:
    assert key({**BASE, name: value}) == key(BASE)


def test_system_prompt_earlier_turns_model_and_namespace_are_all_in_the_key() -> None:
    other_system = {
        **BASE,
        "messages": [{"role": "system", "content": "Be verbose."}, BASE["messages"][1]],
    }
    earlier_turn = {**BASE, "messages": [{"role": "user", "content": "Hi"}, *BASE["messages"]]}
    assert key(other_system) != key(BASE)
    assert key(earlier_turn) != key(BASE)
    assert key(BASE, model="other") != key(BASE)
    assert key(BASE, namespace="key:2") != key(BASE)


def test_the_upstream_behind_the_model_is_in_the_key_and_the_partition() -> None:
    on_a = derive("key:1", "demo", BASE, upstream="gpt-4o at https://a.example/v1 (openai)")
    on_b = derive("key:1", "demo", BASE, upstream="llama at http://b.example/v1 (vllm)")
    assert on_a.exact != on_b.exact
    assert on_a.partition != on_b.partition


def test_parameter_order_does_not_matter() -> None:
    assert key({"temperature": 1, **BASE, "seed": 3}) == key({"seed": 3, **BASE, "temperature": 1})


def test_a_whole_number_written_as_a_float_is_the_same_parameter() -> None:
    assert key({**BASE, "temperature": 0}) == key({**BASE, "temperature": 0.0})
    assert key({**BASE, "max_tokens": 10}) == key({**BASE, "max_tokens": 10.0})
    assert key({**BASE, "temperature": 0.5}) != key({**BASE, "temperature": 0})


def test_the_compared_text_is_the_last_turn_and_tool_turns_skip_semantic_matching() -> None:
    plain = derive("key:1", "demo", BASE)
    assert plain.conversation_text == "user: What is 2+2?"  # the system prompt: below
    assert plain.semantic_eligible
    tool_turn = {
        **BASE,
        "messages": [*BASE["messages"], {"role": "tool", "content": "4", "tool_call_id": "c"}],
    }
    assert not derive("key:1", "demo", tool_turn).semantic_eligible


def test_earlier_turns_are_matched_exactly_and_only_the_last_turn_by_similarity() -> None:
    """After the same first exchange, "What is its population?" and "What is its area?"
    embedded together with it at similarity 0.97: the shared history outweighed the
    question."""

    def conversation(*contents: str) -> dict:
        roles = ("user", "assistant") * len(contents)
        turns = [{"role": r, "content": c} for r, c in zip(roles, contents, strict=False)]
        return {**BASE, "messages": [BASE["messages"][0], *turns]}

    first = ("Tell me about Paris.", "Paris is the capital of France.")
    population = derive("key:1", "demo", conversation(*first, "What is its population?"))
    area = derive("key:1", "demo", conversation(*first, "What is its area?"))
    other_history = derive("key:1", "demo", conversation("Tell me about Rome.", first[1],
                                                         "What is its population?"))  # fmt: skip
    assert population.conversation_text == "user: What is its population?"
    assert population.partition == area.partition != other_history.partition
    assert (
        derive("key:1", "demo", conversation("Hi")).partition
        == derive("key:1", "demo", BASE).partition
    )  # a single turn's partition has no history in it


def test_values_beyond_64_bits_and_any_unicode_still_make_a_stable_key() -> None:
    """The fast encoder refuses integers beyond 64 bits; the key must not fail on them."""
    body = {**BASE, "seed": 10**30, "messages": [{"role": "user", "content": "naïve ☃ 漢字"}]}
    assert key(body) == key(dict(reversed(body.items())))
    assert key(body) != key({**body, "seed": 10**30 + 1})


def test_text_parts_are_compared_and_images_audio_or_files_skip_semantic_matching() -> None:
    def asking(*parts: dict) -> dict:
        return {**BASE, "messages": [{"role": "user", "content": list(parts)}]}

    text = {"type": "text", "text": "What is in this picture?"}
    assert derive("key:1", "demo", asking(text)).semantic_eligible
    assert derive("key:1", "demo", asking(text)).conversation_text == "user: " + text["text"]
    for other in (
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {"type": "input_audio", "input_audio": {"data": "UklGR", "format": "wav"}},
        {"type": "file", "file": {"file_id": "file-1"}},
    ):
        assert not derive("key:1", "demo", asking(text, other)).semantic_eligible


def test_system_prompts_are_matched_exactly_as_part_of_the_partition() -> None:
    """The embedder reads only the start of a long text, so a long system prompt in the
    compared text made every question look the same."""
    other_system = {**BASE, "messages": [{"role": "system", "content": "You are verbose."},
                                         BASE["messages"][1]]}  # fmt: skip
    developer = {**BASE, "messages": [{"role": "developer", "content": "You are terse."},
                                      BASE["messages"][1]]}  # fmt: skip
    partitions = {derive("key:1", "demo", body).partition for body in (BASE, other_system,
                                                                        developer)}  # fmt: skip
    assert len(partitions) == 3
    assert derive("key:1", "demo", other_system).conversation_text == "user: What is 2+2?"
