"""Guards on what is quoted or written as code: quoted text, code identifiers, operators,
and output constraints (format, length, language of the answer)."""

from __future__ import annotations

import re
from functools import lru_cache

from cache.semantic.guards.text import clean_text

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
    return frozenset(" ".join(m.lower().split()) for m in _CONSTRAINT.findall(clean_text(text)))


def constraints(asked: str, cached: str) -> bool:
    """Different output constraints ("in 3 words", "as JSON", "briefly", "step by step")."""
    return _constraints(asked) != _constraints(cached)
