"""Client-chosen text made storable: what Postgres refuses (NUL, lone surrogates) escaped,
and what a column cannot hold cut, so a record keeps the client's value, readably."""

_ELLIPSIS = "…"


def storable(text: str, max_chars: int | None = None) -> str:
    r"""`text` with NUL written as the four characters `\x00` and a lone surrogate as its
    escape (`\ud800`); past `max_chars`, cut to that length, the last one "…". Valid text
    under the limit is returned as it is."""
    if not text.isascii() or "\x00" in text:
        text = text.replace("\x00", "\\x00")
        if not text.isascii():
            # Only lone surrogates fail to encode; they become their backslash escapes.
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if max_chars is not None and len(text) > max_chars:
        return text[: max_chars - 1] + _ELLIPSIS
    return text
