"""Guards on what the words say: numbers and ordinals, negation, opposite or different
members of a word group (directions, roles, units, languages)."""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from itertools import pairwise

from cache.semantic.guards.text import clean_text, words_of

# --- numbers ------------------------------------------------------------------------------

_NUMBER_WORDS = {
    "zero": "0", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12",
    "twenty": "20", "thirty": "30", "forty": "40", "fifty": "50", "hundred": "100",
    "thousand": "1000", "million": "1e6", "billion": "1e9", "half": "0.5", "double": "x2",
    "twice": "x2", "triple": "x3", "third": "#3", "dozen": "12", "thrice": "x3",
}  # fmt: skip
_ORDINALS = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
    "eighth": 8, "ninth": 9, "tenth": 10,
}  # fmt: skip
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


@lru_cache(maxsize=8192)
def _numbers(text: str) -> tuple[frozenset[str], frozenset[str]]:
    """(numbers written with digits, numbers written as words), as digit strings."""
    digits = frozenset(n.replace(",", "") for n in _NUMBER.findall(clean_text(text)))
    words = (w[:-1] if w[:-1] in _NUMBER_WORDS else w for w in words_of(text))  # "thousands"
    return digits, frozenset(_NUMBER_WORDS[w] for w in words if w in _NUMBER_WORDS)


def numbers(asked: str, cached: str) -> bool:
    """Different numbers: both texts state numbers and they differ, or a number written in
    digits is on one side only ("two methods" vs "a method" alone is rewording), or both
    texts use ordinals and they differ ("first season" / "second season"), or an ordinal
    ranks a superlative on one side only ("second highest salary" / "highest salary")."""
    (a_digits, a_words), (c_digits, c_words) = _numbers(asked), _numbers(cached)
    a_ordinals, c_ordinals = _ordinals(asked), _ordinals(cached)
    if a_ordinals and c_ordinals and a_ordinals != c_ordinals:
        return True
    if _ranks(asked) != _ranks(cached):  # "second highest" / "highest"
        return True
    a, c = a_digits | a_words, c_digits | c_words
    if a == c:
        return False
    return bool(a and c) or bool(a_digits ^ c_digits)


def _ordinals(text: str) -> frozenset[int]:
    return frozenset(_ORDINALS[w] for w in words_of(text) if w in _ORDINALS)


_SUPERLATIVES = frozenset({"most", "least", "best", "worst"})


def _ranks(text: str) -> frozenset[int]:
    """Ordinals that rank a superlative: "second highest", "third most popular"."""
    words = words_of(text)
    return frozenset(
        _ORDINALS[w]
        for w, following in pairwise(words)
        if w in _ORDINALS and (following in _SUPERLATIVES or following.endswith("est"))
    )


# --- negation -----------------------------------------------------------------------------

_NEGATIONS = {
    "not", "no", "never", "without", "none", "nobody", "nothing", "neither", "nor", "cannot",
    "nowhere", "cant", "dont", "doesnt", "didnt", "isnt", "arent", "wasnt", "werent", "wont",
    "shouldnt", "wouldnt", "couldnt", "hasnt", "havent", "hadnt", "mustnt", "except",
    "non", "absence", "absent", "lack", "lacks", "lacking", "avoid", "avoids", "avoiding",
    "unable",
}  # fmt: skip
_NON_WORDS = {"nonetheless", "nonsense", "nonstop"}  # "non..." words that negate nothing
# Idioms that contain a negation word but negate nothing: "not only X but also Y",
# "whether X or not".
_NOT_NEGATING = re.compile(r"\bnot only\b|\bor not\b", re.IGNORECASE)
_NT_STEMS = {"do", "does", "did", "is", "are", "was", "were", "ca", "wo", "should", "would",
             "could", "has", "have", "had", "must", "need", "ai"}  # fmt: skip


@lru_cache(maxsize=8192)
def _negated(text: str) -> bool:
    words = words_of(_NOT_NEGATING.sub(" ", text) if _NOT_NEGATING.search(text) else text)
    return any(
        w in _NEGATIONS
        or (w.endswith("nt") and w[:-2] in _NT_STEMS)
        or (w.startswith("non") and len(w) >= 7 and w not in _NON_WORDS)  # "nonzero"
        for w in words
    )


def negation(asked: str, cached: str) -> bool:
    """A negation ("not", "n't", "never", "without", ...) on one side only. A leading answer
    particle ("No, it doesn't exist") is not counted."""
    return _negated(asked) != _negated(cached)


_NEGATING_PREFIXES = ("un", "in", "im", "ir", "il", "dis", "non")


def _prefix_negated(words: tuple[str, ...], other: frozenset[str]) -> bool:
    """A word of ``words`` is a word of ``other`` (4+ letters) with a negating prefix that
    ``other`` does not also use ("non-zero" is "nonzero"; "like and dislike" covers
    "dislike"), and ``words`` does not use the bare word itself."""
    own = set(words)
    for w in own - other:
        if len(w) < 6 or not w.startswith(_NEGATING_PREFIXES):
            continue
        for prefix in _NEGATING_PREFIXES:
            bare = w[len(prefix) :]
            if (
                w.startswith(prefix)
                and len(bare) >= 4
                and bare in other
                and bare not in own
                and prefix not in other
            ):
                return True
    return False


def negated_word(asked: str, cached: str) -> bool:
    """A word negated by a prefix on one side only: healthy / unhealthy, mutable /
    immutable, hide / unhide, correct / incorrect."""
    a, c = words_of(asked), words_of(cached)
    return _prefix_negated(a, frozenset(c)) or _prefix_negated(c, frozenset(a))


# --- word groups: directions / roles, units, languages --------------------------------------

# Each group lists alternatives ("poles") separated by "|"; a group without "|" has one pole
# per word. Words of one pole are synonyms.
_OPPOSITES = [
    "up|down", "left|right", "north|south|east|west", "before|after", "above|below",
    "over|under", "ascending|descending",
    "increase increases increased raise raises raised|"
    "decrease decreases decreased reduce reduces reduced cut cuts",
    "min minimum|max maximum", "best|worst", "more|less fewer", "larger bigger|smaller",
    "higher upper|lower", "fast faster quickly|slow slower slowly", "long longer|short shorter",
    "older|younger newer", "first|last",
    "start begin|end finish stop", "open|close", "inner|outer", "import|export",
    "upload|download", "upgrade|downgrade", "encode|decode", "encrypt|decrypt",
    "compress|decompress", "buy|sell", "push|pull", "input|output", "win gain|lose",
    "pros|cons", "advantages|disadvantages downsides", "benefits|drawbacks risks dangers",
    "strength strengths|weakness weaknesses", "similar|different differ",
    "similarities|differences", "allow permit|block deny forbid",
    "row rows|column columns", "horizontal horizontally|vertical vertically",
    "cheap cheaper cheapest|expensive costly", "correct|incorrect wrong", "soft runny|hard firm",
    "dark|light", "average|median", "even|odd",
    "iterative iteratively|recursive recursively", "top|bottom", "all every|some",
    "always|sometimes|often|usually|rarely|seldom", "must|may", "part|full",
    "approve approves approved approving approval accept accepts accepted accepting|"
    "decline declines declined declining reject rejects rejected rejecting",
    "red orange yellow green blue purple pink brown black white grey gray",
    "earliest|latest", "early|late",
    "public|private", "static|dynamic", "synchronous sync|asynchronous async", "rise|fall",
    "success successful succeed|failure failed fail", "boiling|freezing",
    "true|false", "good|bad", "positive|negative", "add|remove delete", "enable|disable",
    "install|uninstall", "lock|unlock", "legal|illegal", "safe|unsafe", "hot|cold",
    "formal|casual informal", "simple simpler plain|technical complex complicated advanced",
    "question questions|answer answers", "spring|summer|autumn|winter", "sunrise|sunset",
    "keep keeps keeping kept retain preserve|discard discards discarding discarded drop drops",
    "male|female",
    "men|women", "boy|girl", "husband|wife", "past|future",
    "yesterday|today|tomorrow", "morning|afternoon|evening|night", "read|write", "client|server",
    "sender|receiver", "send|receive", "borrow|lend", "teacher|student",
    "employer|employee", "landlord|tenant", "buyer|seller", "parent|child",
    "string strings str|number numbers integer integers int float floats|list lists array arrays|"
    "dict dicts dictionary dictionaries hashmap|tuple tuples|boolean booleans bool",
]  # fmt: skip
_UNITS = [
    "km kilometer kilometers kilometre kilometres|mile miles|meter meters metre metres|"
    "cm centimeter centimeters|mm millimeter millimeters|inch inches|foot feet ft|yard yards",
    "kg kilogram kilograms|gram grams|lb lbs pound pounds|oz ounce ounces|ton tons tonne",
    "celsius|fahrenheit|kelvin", "liter liters litre litres|gallon gallons|quart quarts",
    "second seconds|minute minutes|hour hours hourly|day days daily|week weeks weekly|"
    "month months monthly|year years yearly annual annually",
    "usd dollar dollars|eur euro euros|gbp|rupee rupees inr|yen jpy|cny yuan",
    "bit bits|byte bytes|kb|mb|gb|tb|kib|mib|gib", "mph|kph", "watt watts|kw|kwh|volt volts",
]  # fmt: skip
# ("go", "c", "r", "swift", "rust" are left out: too often ordinary words)
_LANGUAGES = [
    "python pythonic|java|javascript js|typescript ts|c++ cpp|c# csharp|golang|ruby|php|"
    "kotlin|scala|haskell|perl|matlab|julia|lua|elixir|erlang|clojure|bash|powershell|"
    "fortran|cobol|ocaml",
    "json|yaml yml|xml|csv|toml|markdown|latex",
    "mysql|postgres postgresql|sqlite|oracle|mongodb|redis|cassandra",
    "windows|linux|mac macos|ubuntu|android|ios",
    "react|angular|vue|svelte|django|flask|rails|laravel",
]  # fmt: skip

Poles = dict[str, tuple[int, int]]


def _poles(groups: list[str]) -> Poles:
    table: Poles = {}
    for g, group in enumerate(groups):
        poles = group.split("|") if "|" in group else group.split()
        for p, pole in enumerate(poles):
            for word in pole.split():
                table[word] = (g, p)
    return table


OPPOSITE_POLES, _UNIT_POLES, LANGUAGE_POLES = map(_poles, (_OPPOSITES, _UNITS, _LANGUAGES))


def _used(text: str, table: Poles) -> Counter[tuple[int, int]]:
    return Counter(table[w] for w in words_of(text) if w in table)


def _conflict(asked: str, cached: str, table: Poles) -> bool:
    """Both sides use a pole of one group more often than the other side does: "read" /
    "write", but also "Write code to read" / "Write code to write"."""
    a, c = _used(asked, table), _used(cached, table)
    return bool({g for g, _ in a - c} & {g for g, _ in c - a})


_PARTICLES = {"in": "out", "out": "in", "on": "off", "off": "on", "up": "down", "down": "up"}


@lru_cache(maxsize=8192)
def _phrasal_verbs(text: str) -> frozenset[tuple[str, str]]:
    """(verb stem, particle) of every word followed by in/out/on/off/up/down."""
    words = words_of(text)
    return frozenset((w[:3], p) for w, p in pairwise(words) if p in _PARTICLES)


def _opposite_particles(asked: str, cached: str) -> bool:
    a, c = _phrasal_verbs(asked), _phrasal_verbs(cached)
    return any((verb, _PARTICLES[p]) in c and (verb, p) not in c for verb, p in a - c)


_RELATIVE = re.compile(
    r"\b(this|last|next|previous|coming)\s+(year|month|week|weekend|day|night|season|quarter)\b",
    re.IGNORECASE,
)


def _periods(text: str) -> set[tuple[str, str]]:
    return {(unit.lower(), when.lower()) for when, unit in _RELATIVE.findall(text)}


def _other_period(asked: str, cached: str) -> bool:
    """The same period, relative to now in another way: "this year" / "last year"."""
    a, c = _periods(asked), _periods(cached)
    return bool({unit for unit, _ in a - c} & {unit for unit, _ in c - a})


def opposites(asked: str, cached: str) -> bool:
    """Opposite directions / comparisons / roles on the two sides (left vs right, best vs
    worst, buy vs sell, zoom in vs zoom out, this year vs last year). "best" on one side only,
    or "enable or disable" vs "disable", pass."""
    return (
        _conflict(asked, cached, OPPOSITE_POLES)
        or _opposite_particles(asked, cached)
        or _other_period(asked, cached)
    )


def units(asked: str, cached: str) -> bool:
    """Different units of measure, time or currency on the two sides."""
    return _conflict(asked, cached, _UNIT_POLES)


def languages(asked: str, cached: str) -> bool:
    """A programming language, data format, database, OS or framework that the other side
    does not name ("reverse a string" vs "reverse a string in TypeScript")."""
    return set(_used(asked, LANGUAGE_POLES)) != set(_used(cached, LANGUAGE_POLES))
