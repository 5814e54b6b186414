"""What the guards read of a text: the words of its turns, without role prefixes, answer
particles ("No, ..."), list markers and possessive 's."""

from __future__ import annotations

import re
from functools import lru_cache

_ROLE = re.compile(r"^\s*(?:user|assistant|system|tool|human|ai)\s*:\s*", re.I | re.M)
_ANSWER_PARTICLE = re.compile(r"(?:^|(?<=[.!?\n]))\s*(?:yes|no|yeah|nope)\s*,", re.I)
_LIST_MARKER = re.compile(r"(?:^|(?<=\s))\d{1,2}[.)](?=\s)", re.M)
WORD = re.compile(r"[a-z0-9_]+(?:[+#]+|'[a-z]+)?", re.IGNORECASE)


@lru_cache(maxsize=8192)
def clean_text(text: str) -> str:
    """Drop role prefixes, answer particles ("No, ..."), list markers and possessive 's."""
    text = text.replace("’", "'").replace("‘", "'")
    text = _ROLE.sub("", text)
    text = _ANSWER_PARTICLE.sub(" ", text)
    text = _LIST_MARKER.sub(" ", text)
    return re.sub(r"'s\b", "", text)


@lru_cache(maxsize=8192)
def words_of(text: str) -> tuple[str, ...]:
    return tuple(w.lower().replace("'", "") for w in WORD.findall(clean_text(text)))
