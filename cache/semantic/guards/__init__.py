"""Guards against near-miss cache hits that sentence embeddings do not see.

A semantic hit (similarity above the threshold) is only served when
``refusal_reason(asked, cached)`` is None. Each guard is a small function ``(asked,
cached) -> bool`` (True = refuse) named in ``GUARDS``, so the eval
(bench/semantic_eval.py) can switch them off one at a time.

Every guard refuses only on concrete conflicting evidence, never because wording differs:
two different numbers or ordinals, a negation on one side only, a word negated by a prefix
on one side only (healthy / unhealthy), opposite members of a direction/role group or
opposite particles (zoom in / out) on the two sides, different units, a programming
language or format the other side lacks, quoted text, code identifiers or operators on
each side that the other lacks, different output constraints, the same instruction on
other input ("...Animal: octopus" / "...Animal: penguin"), the same key words in another
order, a different name in each text, or a different question type (why vs yes/no vs
how...). All guards are symmetric and pure Python; each text's features are cached. The
texts are the turns as embedded ("role: content"; cache/keys.py). Measured effect per
guard: docs/semantic-cache.md. The guards live by topic in
cache/semantic/guards/meaning.py, code.py and form.py.
"""

from __future__ import annotations

from collections.abc import Callable

from cache.semantic.guards.code import constraints, identifiers, operators, quoted
from cache.semantic.guards.form import content, entities, order, question_type, template_input
from cache.semantic.guards.meaning import (
    languages,
    negated_word,
    negation,
    numbers,
    opposites,
    units,
)

Guard = Callable[[str, str], bool]


# --- verifier (measured, not in the default set) --------------------------------------------

LEXICAL_MAX_NEW = 1


def lexical(asked: str, cached: str) -> bool:
    """Verifier: refuse when either side has more than LEXICAL_MAX_NEW content words
    (6-letter prefixes, stop words dropped) that the other side lacks."""
    a, c = set(content(asked)), set(content(cached))
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
