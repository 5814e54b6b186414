"""The semantic cache's similarity scale, default threshold and candidate choice.

``score(cosine)`` maps the cosine of two all-MiniLM-L6-v2 embeddings (as cache/semantic/embedder.py
computes them: int8 products) to the "similarity" that operators configure. It is piecewise
linear and increasing, through (0, 0), (0.9075, 0.95) and (1, 1): the default threshold
0.95 is cosine 0.9075 (how it was chosen, and its precision: docs/semantic-cache.md).

``choose(asked, candidates)`` picks which cached entry, if any, serves ``asked``: among the
top-k search results whose score reaches the threshold and that no guard refuses, the best
cosine wins, except that candidates within ``TIE_MARGIN`` cosine of it are ranked by cosine +
``LEXICAL_WEIGHT`` x word overlap with ``asked``, so of two near-identical cached prompts the
one worded (and code-quoted) like the question is returned. A candidate that a guard refuses
hides every candidate less similar than itself: when the nearest cached prompt differs from
the question in a concrete way, the question is about that prompt's topic, and a farther
entry is no safer an answer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from itertools import pairwise

from cache.semantic.guards import GUARDS, Guard, refusal_reason

DEFAULT_THRESHOLD = 0.95
# The range operators may set. 0.80 is the lowest point measured (docs/semantic-cache.md,
# "Similarity scale"): same-topic Quora questions are already served a wrong answer about
# two times in five there (QQP strict precision 0.565). Below it the scale is unmeasured and
# falls linearly to cosine 0, so a low threshold serves unrelated answers (at 0, anything).
MIN_THRESHOLD = 0.80
MAX_THRESHOLD = 1.0
TOP_K = 4  # candidates to ask FAISS for
TIE_MARGIN = 0.02  # cosine
LEXICAL_WEIGHT = 1.0

_KNOTS = ((0.0, 0.0), (0.9075, 0.95), (1.0, 1.0))  # (cosine, score)


def score(cosine: float) -> float:
    """Similarity in [0, 1] of a cosine (monotone, piecewise linear; negative cosines -> 0)."""
    if cosine <= _KNOTS[0][0]:
        return 0.0
    for (c0, s0), (c1, s1) in pairwise(_KNOTS):
        if cosine <= c1:
            return s0 + (cosine - c0) * (s1 - s0) / (c1 - c0)
    return 1.0


def min_cosine(threshold: float) -> float:
    """The smallest cosine whose score reaches ``threshold`` (the inverse of ``score``), e.g.
    for a FAISS range search."""
    if threshold <= 0.0:
        return -1.0
    for (c0, s0), (c1, s1) in pairwise(_KNOTS):
        if threshold <= s1:
            return c0 + (threshold - s0) * (c1 - c0) / (s1 - s0)
    return 1.0


# Words with their code quotes (`Table` != Table) and double quotes: how a prompt is written
# is part of its wording. Case is kept: `AudioFolder` != `audiofolder`.
_TOKEN = re.compile(r"`?\w+`?|\"")


@lru_cache(maxsize=8192)
def _tokens(text: str) -> frozenset[str]:
    return frozenset(_TOKEN.findall(text))


def overlap(a: str, b: str) -> float:
    """Jaccard overlap of the two texts' word sets (case-sensitive, code quotes kept)."""
    ta, tb = _tokens(a), _tokens(b)
    return len(ta & tb) / len(ta | tb) if ta or tb else 1.0


def choose(
    asked: str,
    candidates: Sequence[tuple[str, float]],
    threshold: float = DEFAULT_THRESHOLD,
    guards: tuple[Guard, ...] = GUARDS,
    lexical_weight: float = LEXICAL_WEIGHT,
) -> int | None:
    """Index in ``candidates`` ((cached prompt, cosine) pairs, any order) of the entry to
    serve for ``asked``, or None for a miss."""
    floor = min_cosine(threshold)
    passing, nearest_refused = [], floor
    for i, (cached, cosine) in enumerate(candidates):
        if cosine < floor:
            continue
        if refusal_reason(asked, cached, guards) is None:
            passing.append(i)
        else:
            nearest_refused = max(nearest_refused, cosine)
    passing = [i for i in passing if candidates[i][1] >= nearest_refused]
    if not passing:
        return None
    best = max(candidates[i][1] for i in passing)
    return max(
        (i for i in passing if candidates[i][1] >= best - TIE_MARGIN),
        key=lambda i: candidates[i][1] + lexical_weight * overlap(asked, candidates[i][0]),
    )
