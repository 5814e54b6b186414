"""What simulated clients send: the traffic mix of `manage.py simulate_traffic`.

The mix is dealt in shuffled decks of ``DECK_SIZE`` requests, so every stretch of traffic,
even a 2-second run, holds each kind in the same proportion: popular prompts asked again
(exact hits after their first miss), paraphrases of popular prompts asked earlier (semantic
hits when the model's semantic mode is on, every pair chosen so the guards in
cache/semantic/guards let it through), fresh prompts (misses; each carries its own number, so the
numbers guard keeps them from matching anything), streamed requests, and failures: an
unknown model (404), bodies that fail validation (400) and, given a failing model, upstream
errors. Everything is drawn from one ``random.Random(seed)``: a seed replays the same
requests (against a warm cache the fresh prompts then hit too).
"""

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass

DECK_SIZE = 20
# kind: (plain, streamed) per deck; "failing" turns into more of the others without a
# failing model.
_DECK = {
    "popular": (5, 2),
    "paraphrase": (2, 1),
    "fresh": (4, 2),
    "unknown_model": (1, 0),
    "bad_body": (1, 0),
    "failing": (2, 0),
}
_WITHOUT_FAILING = {"popular": (6, 2), "fresh": (5, 2)}
UNKNOWN_MODEL = "no-such-model"
PARAPHRASE_MIN_GAP = 10  # requests between a prompt and its paraphrase: it must be stored

# Each paraphrase scores >= 0.95 against its prompt with the default embedder and passes
# every guard (checked in tests/monitoring/test_simulate_traffic.py).
POPULAR: dict[str, tuple[str, ...]] = {
    "What is the capital city of France?": (
        "What's the capital of France?", "What is the capital of France?"),
    "How do I reverse a list in Python?": (
        "What is the best way to reverse a list in Python?",
        "How would I reverse a list in Python?"),
    "What are the health benefits of drinking green tea?": (
        "What are the health benefits of green tea?",
        "What health benefits does drinking green tea have?"),
    "How do I make a good cup of coffee at home?": (
        "How can I make good coffee at home?",
        "How do I make a really good cup of coffee at home?"),
    "What is the difference between a virus and a bacterium?": (
        "How is a virus different from a bacterium?",
        "How does a virus differ from a bacterium?"),
    "How does photosynthesis work?": (
        "How exactly does photosynthesis work?",
        "How does the process of photosynthesis work?"),
    "What causes the seasons on Earth?": (
        "What causes seasons on planet Earth?", "What is the cause of the seasons on Earth?"),
    "How can I improve my sleep quality?": (
        "How do I improve my sleep quality?", "How do I get better quality sleep?"),
    "What is a good way to learn a new language?": (
        "What is the best way to learn a new language?",
        "How should I go about learning a new language?"),
    "How do I write a cover letter for a job application?": (
        "How should I write a cover letter for a job application?",
        "How do you write a cover letter when applying for a job?"),
    "What is machine learning?": (
        "What does machine learning mean?", "What exactly is machine learning?"),
    "How do I remove a stain from a white shirt?": (
        "How can I get a stain out of a white shirt?",
        "What is the best way to remove stains from a white shirt?"),
    "What should I pack for a beach vacation?": (
        "What do I need to pack for a beach holiday?",),
    "How do vaccines work?": ("How does a vaccine work?", "How do vaccines actually work?"),
    "What is the meaning of the word serendipity?": (
        "What does the word serendipity mean?", "What does serendipity mean?"),
    "How do I change a flat tire on a car?": (
        "How do you change a flat tyre on a car?", "How can I change a flat tire?"),
    "What are some tips for public speaking?": (
        "What are some good tips for public speaking?",
        "What tips do you have for public speaking?"),
    "How do I keep houseplants alive?": (
        "How can I keep my houseplants alive?", "How do you keep houseplants alive?"),
    "What is the greenhouse effect?": (
        "What does the greenhouse effect mean?", "What exactly is the greenhouse effect?"),
    "How do I make pancakes from scratch?": (
        "How can I make pancakes from scratch?", "How do you make pancakes from scratch?"),
    "What is inflation in economics?": (
        "What does inflation mean in economics?", "What is meant by inflation in economics?"),
    "How do I start running as a beginner?": (
        "How can I get started with running as a beginner?",
        "How do I start running if I am a beginner?"),
    "Why is the sky blue?": ("Why does the sky look blue?", "Why is the sky blue in colour?"),
    "How do I center a div in CSS?": (
        "How can I center a div with CSS?", "What is the best way to center a div in CSS?"),
}  # fmt: skip
_PROMPTS = list(POPULAR)
_POPULARITY = [1 / (rank + 1) for rank in range(len(_PROMPTS))]  # Zipf: a few are hot

# {n} is unique per fresh prompt.
FRESH: tuple[str, ...] = (
    "Summarise support ticket #{n}: the parcel arrived {k} days late and the box was damaged.",
    "Write a short product description for item SKU-{n}, a {colour} {thing}.",
    "What is {n} multiplied by {k}?",
    "Draft a polite reply to customer {n} who asks when their refund will arrive.",
    "Translate into Spanish: 'Your order {n} has shipped and arrives in {k} days.'",
    "Is {n} a prime number?",
    "Convert {n} kilometres to miles.",
    "Suggest a catchy subject line for newsletter issue {n} about {colour} {thing}s.",
)
_COLOURS = ("red", "blue", "green", "black", "white", "yellow", "orange", "purple")
_THINGS = ("backpack", "coffee mug", "desk lamp", "umbrella", "water bottle", "notebook")


@dataclass(frozen=True)
class Planned:
    """One request to send: ``body`` is the raw bytes (bad bodies are not JSON)."""

    kind: str
    body: bytes
    stream: bool


def plan_requests(*, model: str, failing_model: str, seed: int) -> Iterator[Planned]:
    """The traffic, endlessly, in decks of DECK_SIZE; the same seed gives the same requests."""
    rng = random.Random(seed)
    deck = {**_DECK, **({} if failing_model else _WITHOUT_FAILING)}
    if not failing_model:
        del deck["failing"]
    slots = [(kind, i < streamed) for kind, (plain, streamed) in deck.items()
             for i in range(plain + streamed)]  # fmt: skip
    assert len(slots) == DECK_SIZE
    fresh_numbers = iter(range(rng.randrange(10_000, 90_000), 10**9))
    first_asked: dict[str, int] = {}
    index, bad_bodies = 0, 0
    while True:
        rng.shuffle(slots)
        for kind, stream in slots:
            if kind == "bad_body":
                bad_bodies += 1
                yield Planned(kind, _bad_body(model, bad_bodies), False)
            elif kind == "unknown_model":
                yield Planned(kind, _body(UNKNOWN_MODEL, rng.choice(_PROMPTS), False), False)
            elif kind == "failing":
                yield Planned(kind, _body(failing_model, rng.choice(_PROMPTS), False), False)
            elif kind == "fresh":
                text = rng.choice(FRESH).format(n=next(fresh_numbers), k=rng.randrange(2, 60),
                                                colour=rng.choice(_COLOURS),
                                                thing=rng.choice(_THINGS))  # fmt: skip
                yield Planned(kind, _body(model, text, stream), stream)
            else:
                asked_before = [p for p, i in first_asked.items()
                                if index - i >= PARAPHRASE_MIN_GAP]  # fmt: skip
                if kind == "paraphrase" and asked_before:
                    text = rng.choice(POPULAR[rng.choice(asked_before)])
                else:  # popular, or a paraphrase before anything could be paraphrased
                    kind, text = "popular", rng.choices(_PROMPTS, _POPULARITY)[0]
                    first_asked.setdefault(text, index)
                yield Planned(kind, _body(model, text, stream), stream)
            index += 1


def _body(model: str, text: str, stream: bool) -> bytes:
    body: dict[str, object] = {"model": model, "messages": [{"role": "user", "content": text}]}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return json.dumps(body).encode()


def _bad_body(model: str, n: int) -> bytes:
    if n % 2:  # a client that cut its JSON short
        return f'{{"model": "{model}", "messages": [{{"role": "user", "content": "Hel'.encode()
    return json.dumps(  # valid JSON, but a temperature out of range
        {"model": model, "messages": [{"role": "user", "content": "Hi"}], "temperature": 7}
    ).encode()
