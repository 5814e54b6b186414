"""Whether a prompt is English: the only language the semantic cache compares.

The embedder (all-MiniLM-L6-v2) was trained on English. In other languages it blurs the
words that make two questions different: 11 of 39 pairs of different questions in German,
French, Spanish, Portuguese, Indonesian, Turkish, Swedish, Russian, Japanese... scored above
the default threshold ("Wie viele Einwohner hat Berlin?" / "...München?", "билет на поезд" /
"на самолет"), and the guards, which read English, saw nothing. Prompts in other languages
are therefore matched exactly only. docs/semantic-cache.md has the measurements.

The test is cheap (no model): a text is not English when more than a fifth of its letters
are outside the Latin alphabets, or when it has at least as many function words of other
languages (der, est, cómo, não, het, yang...) as English ones (the, is, how...); a word
with accented letters counts half (café, Pokémon), an all-capitals word not at all (MIT).
"""

from __future__ import annotations

import re

_LETTERS = re.compile(r"[^\W\d_]+")
NON_LATIN_SHARE = 0.2
READ_CHARS = 2000
_FIRST_NON_LATIN = 0x250  # past Latin Extended-B: IPA, Greek, Cyrillic, CJK...

_ENGLISH_WORDS = (
    "the a an is are was were be been being am to of and or in on at by for with from into",
    "about as than then that this these those it its there their they them he she his her we",
    "our us you your i me my mine what which who whom whose why how when where whether if not",
    "no do does did done can could should would will shall may might must have has had having",
    "get got some any all each every much many more most other such only also just very so but",
    "because while after before over under between through during without within out up down",
    "off again once here both few own same too don doesn isn aren wasn weren hasn haven hadn won",
    "wouldn shouldn couldn let like way best good make need want know use using used",
)
_OTHER_WORDS = (
    "wer den der das und ist nicht ein eine einen einem einer wie ich mit für auf sich auch von"
    " wann warum welche welcher welches kann können wird sind haben oder aber bei nach aus dem"
    " des mein meine gibt viele noch schon sehr über wir ihr sie mich dich uns euch zum zur im"
    " vom nur wenn dass weil",  # German
    "le les des est une et pas que qui pour dans avec sur du au aux ce cette ces sont comment"
    " quel quelle quels quelles pourquoi je vous nous il elle mon ma mes faire peut combien où"
    " tu ne se leur",  # French
    "el los las es una y por para con del cómo cuál qué cuándo dónde puedo mi muy más pero"
    " este esta hay tengo su sus lo al yo tú",  # Spanish
    "gli che di della delle degli nel nella mio sono cosa perché quando dove anche questo"
    " questa",  # Italian
    "os um uma não da dos das em na qual porque onde meu minha você é",  # Portuguese
    "het een en niet wat hoe voor zijn ik dat er naar wanneer waarom welke",  # Dutch
    "och att är hur vad jag inte för med som av og er ikke hvordan hva hvad jeg",  # Nordic
    "jak nie się czy jest co jaki jaka gdzie kiedy dlaczego ile je kde kedy prečo ako",  # Slavic
    "ve bir bu ne nasıl için mi ile",  # Turkish
    "yang dan dari untuk dengan apa bagaimana berapa ini itu adalah saya tidak ada cara",  # Malay
)
_ENGLISH = frozenset(word for line in _ENGLISH_WORDS for word in line.split())
_OTHER = frozenset(word for line in _OTHER_WORDS for word in line.split()) - _ENGLISH


def is_english(text: str) -> bool:
    """Judged on the first READ_CHARS characters (the embedder reads ~1,000 anyway)."""
    words = _LETTERS.findall(text[:READ_CHARS])
    letters = "".join(words)
    if not letters:
        return True  # numbers, symbols: nothing a language model could misread
    if sum(ord(ch) >= _FIRST_NON_LATIN for ch in letters) > NON_LATIN_SHARE * len(letters):
        return False
    english = other = 0.0
    for word in words:
        lowered = word.lower()
        if lowered in _ENGLISH:
            english += 1
        elif word.isupper() and len(word) > 1:
            continue  # an acronym (MIT, EE), not a word of another language
        elif lowered in _OTHER:
            other += 1
        elif not word.isascii():
            other += 0.5
    return other == 0 or other < english
