"""The one redaction function (beastmode/lib/redaction.py): the 8-character rule, prefixes,
key shapes, and the logging filter settings.LOGGING installs."""

import io
import logging
import secrets
import string

import pytest

from beastmode.lib import redaction

_ALPHABET = string.ascii_letters + string.digits


def random_key(prefix: str = "", length: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def test_any_8_consecutive_characters_of_a_key_are_removed_with_their_run() -> None:
    key = random_key("sk-")
    redaction.remember([key])
    text = f"Incorrect API key provided: {key[3:]}. Ends in ...{key[-8:]}; starts {key[:11]}"
    assert redaction.redact(text) == (
        "Incorrect API key provided: [redacted]. Ends in ...[redacted]; starts [redacted]"
    )


def test_seven_characters_of_a_key_are_not_a_leak() -> None:
    key = random_key()
    redaction.remember([key])
    assert redaction.redact(f"tail {key[-7:]}") == f"tail {key[-7:]}"


def test_a_key_without_any_prefix_is_found_too() -> None:
    key = random_key(length=32)
    redaction.remember([key])
    assert redaction.redact(f'{{"key": "{key[5:20]}"}}') == '{"key": "[redacted]"}'


def test_a_known_prefix_alone_is_no_secret() -> None:
    redaction.remember([random_key("sk-proj-")])
    text = "keys start with sk-proj- and then the secret part"
    assert redaction.redact(text) == text


def test_a_key_pasted_with_its_scheme_is_learnt_without_it() -> None:
    key = random_key()
    redaction.remember([f"Bearer {key}"])
    assert redaction.redact(f"got {key[:9]}") == "got [redacted]"


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("sk-abcdefghijklmnop", "[redacted]"),
        ("bm-unknownservicekey", "[redacted]"),
        ("Authorization: Bearer abcdef0123", "Authorization: Bearer [redacted]"),
        ("The context window is 8192 tokens.", "The context window is 8192 tokens."),
    ],
)
def test_what_is_shaped_like_a_key_goes_whether_known_or_not(text: str, redacted: str) -> None:
    assert redaction.redact(text) == redacted


def test_logs_lose_key_fragments_in_messages_args_and_tracebacks() -> None:
    key = random_key("sk-")
    redaction.remember([key])
    # The handler settings.LOGGING installs on the root logger, writing to a buffer here.
    handler = next(h for h in logging.getLogger().handlers if h.name == "console")
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    previous = handler.setStream(buffer)
    try:
        log = logging.getLogger("tests.redaction")
        log.warning("upstream said %s", f"bad key {key[3:]}")
        try:
            raise ValueError(f"quoted {key[-12:]}")
        except ValueError:
            log.exception("failed")
    finally:
        handler.setStream(previous)
    written = buffer.getvalue()
    assert "upstream said bad key [redacted]" in written
    assert "ValueError: quoted [redacted]" in written
    assert key[-12:] not in written and key[3:11] not in written
