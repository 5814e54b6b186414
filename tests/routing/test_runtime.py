"""The Content-Type shortcut BeastMode gives daphne's Twisted must answer as Twisted did."""

import sys
from email.message import EmailMessage
from pathlib import Path

import pytest

from beastmode.lib.runtime import media_type
from tests.processes import free_port, http, server_env, start_process, stop_process, wait_until


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


def test_daphnes_own_access_log_still_logs_requests(transactional_db: None, tmp_path: Path) -> None:
    """BeastMode skips the access-log line Twisted formats and throws away; the one daphne
    writes with --access-log must stay."""
    access_log, port = tmp_path / "access.log", free_port()
    args = [sys.executable, "-m", "daphne", "--access-log", str(access_log), "-b", "127.0.0.1",
            "-p", str(port), "beastmode.asgi:application"]  # fmt: skip
    process = start_process(args, port, "access-log", server_env())
    try:
        assert http(f"{process.url}/v1/models?probe=1").status == 401
        line = wait_until(lambda: access_log.exists() and access_log.read_text().strip())
    finally:
        stop_process(process)
    assert '"GET /v1/models?probe=1"' in line and " 401 " in line
