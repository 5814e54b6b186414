"""Only English prompts are compared by similarity (cache/semantic/english.py; through the gateway:
tests/cache/test_semantic_cache.py)."""

import pytest

from cache.semantic.english import is_english


@pytest.mark.parametrize(
    "text",
    [
        "What is the capital city of France?",
        "Do cats love humans?",  # "do" is Portuguese too
        "Who was Charles de Gaulle?",
        "Is Pokémon Go still popular?",  # accented words count half
        "Are MIT Freshman classes difficult?",  # an acronym is not German "mit"
        "Write a haiku about El Niño.",
        "How many people live in Zürich?",
        "Python sort dict by value",  # no function word at all
        "print(2 ** 3)",
        "2 + 2 = ?",
    ],
)
def test_english_prompts_are_compared(text: str) -> None:
    assert is_english(text)


@pytest.mark.parametrize(
    "text",
    [
        "Wie viele Einwohner hat Berlin?",
        "Was kostet ein Kilo Birnen?",
        "Comment changer un pneu de vélo ?",
        "¿Cómo puedo aprender a nadar rápido?",
        "Qual è la differenza tra un virus e un batterio?",
        "Como faço para abrir uma conta no banco?",
        "Hoe laat gaat de winkel dicht?",
        "Hur lång tid tar det att koka ett ägg?",
        "Bagaimana cara memasak nasi goreng?",
        "İstanbul'da en iyi restoran hangisi?",
        "Сколько стоит билет на поезд до Москвы?",
        "今日の天気はどうですか?",
        "如何学习英语?",
    ],
)
def test_prompts_in_other_languages_are_not(text: str) -> None:
    assert not is_english(text)
