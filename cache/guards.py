"""Guards against near-miss cache hits that sentence embeddings do not see.

A semantic hit (similarity above the threshold) is only served when ``refusal_reason(asked,
cached)`` is None. Each guard is a small function ``(asked, cached) -> bool`` (True = refuse)
named in ``GUARDS``, so the eval (bench/semantic_eval.py) can switch them off one at a time.

Every guard refuses only on concrete conflicting evidence, never because wording differs: two
different numbers or ordinals, a negation on one side only, a word negated by a prefix on one
side only (healthy / unhealthy), opposite members of a direction/role group or opposite
particles (zoom in / out) on the two sides, different units, a programming language or format
the other side lacks, quoted text, code identifiers or operators on each side that the other
lacks, different output constraints, the same instruction on other input ("...Animal: octopus"
/ "...Animal: penguin"), the same key words in another order, a different name
in each text, or a different question type (why vs yes/no vs how...). All guards are
symmetric and pure Python; together they cost 0.1-0.2 ms per pair of texts not seen before
(each text's features are cached). The texts are the turns as embedded ("role: content";
cache/keys.py). Measured effect per guard: docs/semantic-cache.md.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from functools import lru_cache
from itertools import pairwise

Guard = Callable[[str, str], bool]

_ROLE = re.compile(r"^\s*(?:user|assistant|system|tool|human|ai)\s*:\s*", re.I | re.M)
_ANSWER_PARTICLE = re.compile(r"(?:^|(?<=[.!?\n]))\s*(?:yes|no|yeah|nope)\s*,", re.I)
_LIST_MARKER = re.compile(r"(?:^|(?<=\s))\d{1,2}[.)](?=\s)", re.M)
_WORD = re.compile(r"[a-z0-9_]+(?:[+#]+|'[a-z]+)?", re.IGNORECASE)


@lru_cache(maxsize=8192)
def _clean(text: str) -> str:
    """Drop role prefixes, answer particles ("No, ..."), list markers and possessive 's."""
    text = text.replace("’", "'").replace("‘", "'")
    text = _ROLE.sub("", text)
    text = _ANSWER_PARTICLE.sub(" ", text)
    text = _LIST_MARKER.sub(" ", text)
    return re.sub(r"'s\b", "", text)


@lru_cache(maxsize=8192)
def _words(text: str) -> tuple[str, ...]:
    return tuple(w.lower().replace("'", "") for w in _WORD.findall(_clean(text)))


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
    digits = frozenset(n.replace(",", "") for n in _NUMBER.findall(_clean(text)))
    words = (w[:-1] if w[:-1] in _NUMBER_WORDS else w for w in _words(text))  # "thousands"
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
    return frozenset(_ORDINALS[w] for w in _words(text) if w in _ORDINALS)


_SUPERLATIVES = frozenset({"most", "least", "best", "worst"})


def _ranks(text: str) -> frozenset[int]:
    """Ordinals that rank a superlative: "second highest", "third most popular"."""
    words = _words(text)
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
    words = _words(_NOT_NEGATING.sub(" ", text) if _NOT_NEGATING.search(text) else text)
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
    a, c = _words(asked), _words(cached)
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


_OPPOSITE_POLES, _UNIT_POLES, _LANGUAGE_POLES = map(_poles, (_OPPOSITES, _UNITS, _LANGUAGES))


def _used(text: str, table: Poles) -> Counter[tuple[int, int]]:
    return Counter(table[w] for w in _words(text) if w in table)


def _conflict(asked: str, cached: str, table: Poles) -> bool:
    """Both sides use a pole of one group more often than the other side does: "read" /
    "write", but also "Write code to read" / "Write code to write"."""
    a, c = _used(asked, table), _used(cached, table)
    return bool({g for g, _ in a - c} & {g for g, _ in c - a})


_PARTICLES = {"in": "out", "out": "in", "on": "off", "off": "on", "up": "down", "down": "up"}


@lru_cache(maxsize=8192)
def _phrasal_verbs(text: str) -> frozenset[tuple[str, str]]:
    """(verb stem, particle) of every word followed by in/out/on/off/up/down."""
    words = _words(text)
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
        _conflict(asked, cached, _OPPOSITE_POLES)
        or _opposite_particles(asked, cached)
        or _other_period(asked, cached)
    )


def units(asked: str, cached: str) -> bool:
    """Different units of measure, time or currency on the two sides."""
    return _conflict(asked, cached, _UNIT_POLES)


def languages(asked: str, cached: str) -> bool:
    """A programming language, data format, database, OS or framework that the other side
    does not name ("reverse a string" vs "reverse a string in TypeScript")."""
    return set(_used(asked, _LANGUAGE_POLES)) != set(_used(cached, _LANGUAGE_POLES))


# --- quoted text, code identifiers, operators ------------------------------------------------

_QUOTED = re.compile(r'"([^"\n]+)"|`([^`\n]+)`|(?<!\w)\'([^\'\n]+)\'(?!\w)')
_CURLY_QUOTES = str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'"})


def _unmatched_quote(text: str, other: str) -> bool:
    """``text`` quotes something that ``other`` does not contain (case and spacing aside)."""
    quotes = _QUOTED.findall(text.translate(_CURLY_QUOTES))
    if not quotes:  # most prompts: nothing more to do
        return False
    flat = " ".join(other.translate(_CURLY_QUOTES).lower().split())
    return any(" ".join("".join(groups).lower().split()) not in flat for groups in quotes)


def quoted(asked: str, cached: str) -> bool:
    """Each side quotes text the other does not contain: 'Is "He don't know" correct?' /
    'Is "He doesn't know" correct?'. Quoting a word the other side uses bare passes."""
    return _unmatched_quote(asked, cached) and _unmatched_quote(cached, asked)


# snake_case, camelCase or dotted names, and names called with "()"
_IDENTIFIER = re.compile(
    r"\b[A-Za-z_]\w*(?:\.\w+)+\b|\b\w*_\w*\b|\b[a-z]+[A-Z]\w*\b|\b\w+(?=\()"
    r"|\b[A-Z]{1,4}(?:[-/:.][A-Z]{1,4})+\b"  # format patterns: YYYY-MM-DD, HH:MM
)


def _contains(lowered: str, name: str) -> bool:
    """``lowered`` contains ``name`` (lower case) not followed by more of a word: "get_user"
    is not in "get_users()"."""
    return re.search(re.escape(name) + r"(?!\w)", lowered) is not None


def _foreign_identifiers(text: str, other: str) -> bool:
    """``text`` names an identifier that ``other`` does not contain, case aside; a dotted
    name also counts as contained when its last part (4+ characters) is:
    "datasets.list_datasets" / "list_datasets", but "informer.com" / "markets.com" differ."""
    lowered = other.lower()
    for name in _IDENTIFIER.findall(text):
        name, last = name.lower(), name.rsplit(".", 1)[-1].lower()
        if not _contains(lowered, name) and not (len(last) >= 4 and _contains(lowered, last)):
            return True
    return False


def identifiers(asked: str, cached: str) -> bool:
    """Each side names a code identifier the other does not contain: `get_user()` /
    `get_users()`, `user_name` / `user_email`."""
    return _foreign_identifiers(asked, cached) and _foreign_identifiers(cached, asked)


_OPERATOR = re.compile(r"(?<![A-Za-z])[-+*/%=<>&|^~]+(?![A-Za-z])")
# An arithmetic expression: operand, operator, operand ("i * i", "a+b", "x % 2", "3 - 1");
# not "C++", "and/or", "real-time" or "TCP/IP".
_EXPRESSION = re.compile(
    r"[\w)\]]\s*(?:\*\*|//|[*+%])\s*[\w(\[]|[\w)\]]\s+[-/]\s+[\w(\[]|\d\s*[-/]\s*\d"
)


def operators(asked: str, cached: str) -> bool:
    """Each side uses an operator the other lacks: "2 ** 3" / "2 * 3", "for +" / "for -"
    (hyphens inside words do not count); or one side computes an expression and the other
    uses no operator: "print(i * i)" / "print(i)"."""
    a, c = set(_OPERATOR.findall(asked)), set(_OPERATOR.findall(cached))
    if a - c and c - a:
        return True
    return (not c and _EXPRESSION.search(asked) is not None) or (
        not a and _EXPRESSION.search(cached) is not None
    )


# --- output constraints -------------------------------------------------------------------

_CONSTRAINT = re.compile(
    r"\b(?:in|within|under|at most|at least|exactly|max(?:imum)?|min(?:imum)?|no more than|"
    r"less than|fewer than|up to)\s+(?:\w+\s+)?(?:words?|sentences?|lines?|paragraphs?|"
    r"characters?|chars?|bullets?|bullet points?|items?|points?|steps?|tokens?|syllables?)\b"
    r"(?!\s+of\b)"
    r"|(?<!such )\b(?:as|into|using)\s+(?:an?\s+)?(?:json|yaml|xml|csv|markdown|haiku|limerick|"
    r"tweet|bullet|bullets|regex|emojis?)\b|\bin\s+(?:an?\s+)?(?:json|yaml|xml|csv|markdown|"
    r"haiku|limerick|tweet|bullets|emojis?)(?:\s+format)?\s*(?:[.?!]|$)"
    r"|\bas\s+an?\s+(?:table|list|poem|sonnet|story)\b"
    r"|\b(?:in|into|answer in|reply in|respond in)\s+(?:english|french|spanish|german|italian|"
    r"portuguese|chinese|japanese|korean|russian|arabic|hindi|dutch)\b"
    r"|\b(?:briefly|concisely|in detail|eli5|like i'?m (?:five|5)|"
    r"one[- ]word|one[- ]line(?!\s+of\b)|tl;?dr|formally|informally|casually|uppercase|lowercase|"
    r"all caps|numbered|bulleted)\b"
    r"|\bstep[- ]by[- ]step\b(?!\s+(?:instructions?|guides?|tutorials?))",
    re.IGNORECASE | re.MULTILINE,
)


@lru_cache(maxsize=8192)
def _constraints(text: str) -> frozenset[str]:
    return frozenset(" ".join(m.lower().split()) for m in _CONSTRAINT.findall(_clean(text)))


def constraints(asked: str, cached: str) -> bool:
    """Different output constraints ("in 3 words", "as JSON", "briefly", "step by step")."""
    return _constraints(asked) != _constraints(cached)


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
    lines = [line for line in _clean(text).splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _is_key(word: str) -> bool:
    return word not in _STOP and (len(word) > 1 or word.isdigit())


def _content(text: str) -> list[str]:
    return [w[:6] for w in _words(text) if _is_key(w)]


_TOWARDS = frozenset({"to", "into"})


def _key(word: str) -> str:
    """A key word as compared across a "to": singular, first 5 letters ("Indians" = "India",
    "Japanese" = "Japan")."""
    return (word[:-1] if word.endswith("s") and len(word) > 3 else word)[:5]


def _keys(text: str) -> list[str]:
    """The key words and the "to" / "into" between them, in order."""
    return [w if w in _TOWARDS else _key(w) for w in _words(text) if w in _TOWARDS or _is_key(w)]


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
    return tuple(_content(last)), frozenset(keys), frozenset(_arrows(keys))


# --- the same instruction on other input -------------------------------------------------

# "<instruction>: <input>": the last colon followed by space or a line break.
_INPUT_SEPARATOR = re.compile(r":\s+(?=\S)")


@lru_cache(maxsize=8192)
def _instruction_and_input(text: str) -> tuple[tuple[str, ...], frozenset[str]] | None:
    """The words of the instruction before the last ": " (3 or more) and the key words of
    the input after it; None when the text is not written that way."""
    parts = _INPUT_SEPARATOR.split(_clean(text).strip())
    if len(parts) < 2:
        return None
    instruction = _words(": ".join(parts[:-1]))
    return (instruction, frozenset(_content(parts[-1]))) if len(instruction) >= 3 else None


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
    for sentence in re.split(r"[.?!:;\n]+", _clean(text)):
        for i, token in enumerate(_WORD.findall(sentence)):
            lower = token.lower()
            if lower in _STOP or lower in _OPPOSITE_POLES or lower in _LANGUAGE_POLES:
                continue
            if (i > 0 and token[0].isupper()) or (token.isupper() and len(token) > 1):
                names.add(lower)
    return frozenset(names)


@lru_cache(maxsize=8192)
def _initials(text: str) -> str:
    """First letter of every word, "-" for stop words ("Random Access Memory" -> "ram")."""
    return "".join("-" if w in _STOP else w[0] for w in _words(text))


def _expanded(text: str, acronyms: set[str]) -> set[str]:
    """Words of ``text`` that spell out one of ``acronyms``: "natural language processing"
    for "nlp"."""
    words, initials = _words(text), _initials(text)
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
    lowered = _clean(other).lower()
    words = set(_words(other))
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
    words = [w.lower().replace("'", "") for w in _WORD.findall(_last_turn(text))]
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


# --- verifier (measured, not in the default set) --------------------------------------------

LEXICAL_MAX_NEW = 1


def lexical(asked: str, cached: str) -> bool:
    """Verifier: refuse when either side has more than LEXICAL_MAX_NEW content words
    (6-letter prefixes, stop words dropped) that the other side lacks."""
    a, c = set(_content(asked)), set(_content(cached))
    return max(len(a - c), len(c - a)) > LEXICAL_MAX_NEW


# Measured to refuse right hits about as often as wrong ones: not in the default set.
VERIFIERS: tuple[Guard, ...] = (lexical,)
GUARDS: tuple[Guard, ...] = (
    numbers,
    negation,
    negated_word,
    opposites,
    units,
    languages,
    quoted,
    identifiers,
    operators,
    constraints,
    template_input,
    order,
    entities,
    question_type,
)


def refusal_reason(asked: str, cached: str, guards: tuple[Guard, ...] = GUARDS) -> str | None:
    """The name of the first guard that refuses serving ``cached``'s answer to ``asked``."""
    if asked == cached:
        return None
    for guard in guards:
        if guard(asked, cached):
            return guard.__name__
    return None
