"""Guards on how a prompt is built: key words in another order, the same instruction on
other input, different names, another question type."""

from __future__ import annotations

import re
from functools import lru_cache

from cache.semantic.guards.meaning import LANGUAGE_POLES, OPPOSITE_POLES
from cache.semantic.guards.text import WORD, clean_text, words_of

# --- word order ---------------------------------------------------------------------------

_STOP_WORDS = (
    "a an the of to in on at for with by from and or but is are was were be been being am do "
    "does did doing have has had having i me my we our you your he she it its they them their "
    "this that these those what which who whom whose when where why how can could would should "
    "will shall may might must there here as if then than so such about into onto also just "
    "some any all each every other another very really much many most own same too quite get "
    "got use using used one's someone something anyone anything way ways best good better "
    "possible s t ll ve re d m yes"
)
_STOP = set(_STOP_WORDS.split())


def _last_turn(text: str) -> str:
    lines = [line for line in clean_text(text).splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _is_key(word: str) -> bool:
    return word not in _STOP and (len(word) > 1 or word.isdigit())


def content(text: str) -> list[str]:
    return [w[:6] for w in words_of(text) if _is_key(w)]


_TOWARDS = frozenset({"to", "into"})


def _key(word: str) -> str:
    """A key word as compared across a "to": singular, first 5 letters ("Indians" = "India",
    "Japanese" = "Japan")."""
    return (word[:-1] if word.endswith("s") and len(word) > 3 else word)[:5]


def _keys(text: str) -> list[str]:
    """The key words and the "to" / "into" between them, in order."""
    return [w if w in _TOWARDS else _key(w) for w in words_of(text) if w in _TOWARDS or _is_key(w)]


def _arrows(tokens: list[str]) -> set[tuple[str, str]]:
    """(x, y) for each key word x among the 3 before a "to" / "into" and y among the 2 after."""
    arrows = set()
    for i, token in enumerate(tokens):
        if token in _TOWARDS:
            before = [t for t in tokens[max(0, i - 3) : i] if t not in _TOWARDS]
            after = [t for t in tokens[i + 1 : i + 3] if t not in _TOWARDS]
            arrows.update((x, y) for x in before for y in after if x != y)
    return arrows


def order(asked: str, cached: str) -> bool:
    """The same key words in a different order: "Did Germany invade Poland?" / "Did Poland
    invade Germany?", "km to miles" / "miles to km" (2-5 key words), or two of them swapped
    across a "to" (any length; plurals and word endings aside): "Python 2 code to Python 3"
    / "Python 3 code to Python 2", "Indians travelling to Japan" / "Japanese travelling to
    India". Only when both sides have the same key words: rewordings change some of them.
    In a conversation, only the last turn is compared."""
    (a, keys_a, arrows_a), (c, keys_c, arrows_c) = _order_view(asked), _order_view(cached)
    if set(a) == set(c) and 2 <= len(set(a)) <= 5:
        return list(dict.fromkeys(a)) != list(dict.fromkeys(c))
    return keys_a == keys_c and any((y, x) in arrows_c for x, y in arrows_a - arrows_c)


@lru_cache(maxsize=8192)
def _order_view(text: str) -> tuple[tuple[str, ...], frozenset[str], frozenset[tuple[str, str]]]:
    """The last turn's key words, in order; its keys across a "to" and their arrows."""
    last = _last_turn(text)
    keys = _keys(last)
    return tuple(content(last)), frozenset(keys), frozenset(_arrows(keys))


# --- the same instruction on other input -------------------------------------------------

# "<instruction>: <input>": the last colon followed by space or a line break.
_INPUT_SEPARATOR = re.compile(r":\s+(?=\S)")


@lru_cache(maxsize=8192)
def _instruction_and_input(text: str) -> tuple[tuple[str, ...], frozenset[str]] | None:
    """The words of the instruction before the last ": " (3 or more) and the key words of
    the input after it; None when the text is not written that way."""
    parts = _INPUT_SEPARATOR.split(clean_text(text).strip())
    if len(parts) < 2:
        return None
    instruction = words_of(": ".join(parts[:-1]))
    return (instruction, frozenset(content(parts[-1]))) if len(instruction) >= 3 else None


def template_input(asked: str, cached: str) -> bool:
    """The same instruction on different input, each side with key words the other lacks:
    "Fun facts for children about this animal. Animal: octopus" / "... Animal: penguin".
    A long shared instruction makes such prompts embed alike whatever the input."""
    a, c = _instruction_and_input(asked), _instruction_and_input(cached)
    return (
        a is not None and c is not None and a[0] == c[0] and bool(a[1] - c[1]) and bool(c[1] - a[1])
    )


# --- names --------------------------------------------------------------------------------


@lru_cache(maxsize=8192)
def _names(text: str) -> frozenset[str]:
    """Capitalised words not at the start of a sentence, and acronyms (programming languages
    and formats are left to the languages guard, which knows their aliases)."""
    names = set()
    for sentence in re.split(r"[.?!:;\n]+", clean_text(text)):
        for i, token in enumerate(WORD.findall(sentence)):
            lower = token.lower()
            if lower in _STOP or lower in OPPOSITE_POLES or lower in LANGUAGE_POLES:
                continue
            if (i > 0 and token[0].isupper()) or (token.isupper() and len(token) > 1):
                names.add(lower)
    return frozenset(names)


@lru_cache(maxsize=8192)
def _initials(text: str) -> str:
    """First letter of every word, "-" for stop words ("Random Access Memory" -> "ram")."""
    return "".join("-" if w in _STOP else w[0] for w in words_of(text))


def _expanded(text: str, acronyms: set[str]) -> set[str]:
    """Words of ``text`` that spell out one of ``acronyms``: "natural language processing"
    for "nlp"."""
    words, initials = words_of(text), _initials(text)
    found: set[str] = set()
    for acronym in acronyms:
        start = initials.find(acronym)
        while start >= 0:
            found.update(words[start : start + len(acronym)])
            start = initials.find(acronym, start + 1)
    return found


def _is_acronym(name: str) -> bool:
    return 2 <= len(name) <= 5 and name.isalpha()


def _foreign_names(text: str, other: str) -> set[str]:
    """Names in ``text`` that ``other`` does not mention (substring, either way, >= 4 chars:
    "TextClassification" / "datasets.TextClassification", "TESTING" / "test"; an acronym and
    its expansion: "NLP" / "Natural Language Processing")."""
    lowered = clean_text(other).lower()
    words = set(words_of(other))
    long_words = [w for w in words if len(w) >= 4]
    names = {
        n
        for n in _names(text)
        if n not in words
        and (len(n) < 4 or (n not in lowered and not any(w in n for w in long_words)))
        and not (_is_acronym(n) and n in _initials(other))
    }
    if names:
        names -= _expanded(text, {n for n in _names(other) if _is_acronym(n)})
    return names


def entities(asked: str, cached: str) -> bool:
    """Each side names something (capitalised word, acronym) that the other does not mention:
    "capital of Austria" / "capital of Australia". A name on one side only is elaboration."""
    return bool(_foreign_names(asked, cached)) and bool(_foreign_names(cached, asked))


# --- question type ------------------------------------------------------------------------

_QUESTION_WORDS = {
    "why": "why", "how": "how", "what": "what", "which": "what", "who": "who", "whom": "who",
    "whose": "who", "where": "where", "when": "when",
}  # fmt: skip
_AUXILIARIES = {
    "is", "are", "was", "were", "am", "do", "does", "did", "can", "could", "should", "would",
    "will", "shall", "may", "might", "has", "have", "had", "isnt", "arent", "wasnt", "werent",
    "dont", "doesnt", "didnt", "cant", "couldnt", "shouldnt", "wouldnt", "wont", "hasnt",
    "havent",
}  # fmt: skip
_LEAD_IN = {"so", "and", "but", "ok", "okay", "hey", "hi", "please", "then", "also", "well"}
_HOW_LIKE = re.compile(r"^(?:is|are) there (?:any|an?|some) (?:way|ways|method|methods)\b"
                       r"|^(?:is|was) it possible\b", re.I)  # fmt: skip


def _question_type(text: str) -> str | None:
    """The type of the last line's question: why, how, what (which), who, where, when,
    quantity (how many/much), yesno (starts with an auxiliary); None when not a question."""
    words = [w.lower().replace("'", "") for w in WORD.findall(_last_turn(text))]
    while words and words[0] in _LEAD_IN:
        words.pop(0)
    if not words:
        return None
    first, second = words[0], words[1] if len(words) > 1 else ""
    if first == "how" and second in {"many", "much"}:
        return "quantity"
    if first == "how" and second == "come":
        return "why"
    if first in _QUESTION_WORDS:
        return _QUESTION_WORDS[first]
    if first in _AUXILIARIES:
        return "how" if _HOW_LIKE.match(" ".join(words)) else "yesno"
    return None


# Types that rewordings swap freely: "How do I X?" / "What is the best way to X?",
# "What is the number of..." / "How many...", "Who/Where/When..." / "What is the person/
# place/date...". Why-questions and yes/no questions ask something else.
_INTERCHANGEABLE = {
    frozenset(p) for p in (("how", "what"), ("what", "quantity"), ("how", "quantity"),
                           ("what", "who"), ("what", "where"), ("what", "when"))
}  # fmt: skip


def question_type(asked: str, cached: str) -> bool:
    """Different kinds of question on the same topic: "How does X make money?" / "Does X make
    money?", "What is Murphy's law?" / "Why does Murphy's law happen?"."""
    a, c = _question_type(asked), _question_type(cached)
    return a is not None and c is not None and a != c and frozenset((a, c)) not in _INTERCHANGEABLE
