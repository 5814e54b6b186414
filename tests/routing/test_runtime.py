"""The Content-Type shortcut BeastMode gives daphne's Twisted must answer as Twisted did."""

from email.message import EmailMessage

import pytest

from beastmode.runtime import media_type


def twisted_own(line: bytes) -> bytes:
    """twisted.web.http._parseContentType as Twisted 26.10 ships it."""
    message = EmailMessage()
    message["content-type"] = line.decode("charmap")
    return message.get_content_type().encode("charmap")


@pytest.mark.embedded
@pytest.mark.parametrize(
    "value",
    [b"application/json", b"Application/JSON; charset=utf-8", b"application/x-www-form-urlencoded",
     b"multipart/form-data; boundary=xyz", b"MULTIPART/FORM-DATA;boundary=\"a;b\"", b"text/plain",
     b"", b"garbage", b"/json", b"json/", b"a/b/c", b"  multipart/form-data  ; x=1"],
)  # fmt: skip
def test_the_media_type_is_what_email_message_made_of_it(value: bytes) -> None:
    assert media_type(value) == twisted_own(value)
