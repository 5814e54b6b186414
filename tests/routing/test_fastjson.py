"""fastjson.loads reads request bodies and upstream answers: it must mean exactly what
the standard library's json.loads means, errors included."""

import json
import math

import pytest

from beastmode.lib import fastjson

AGREED = [
    b'{"model": "m", "messages": [{"role": "user", "content": "h\\u00e9"}]}',
    b'{"a": 1, "a": 2}',  # the last duplicate wins
    b'{"seed": 123456789012345678901234567890}',  # beyond 64 bits: orjson reads a float
    b'{"temperature": NaN, "top_p": Infinity}',  # not JSON, but json.loads reads it
    b'{"text": "\\ud800"}',  # a lone surrogate
    '{"unicode": "\u00e9"}'.encode(),  # UTF-8 as sent
    b'{"max": 18446744073709551615, "over": 18446744073709551616, "neg": -99999999999999999999}',
]


@pytest.mark.parametrize("data", AGREED)
def test_parse_means_what_json_loads_means(data: bytes) -> None:
    parsed, expected = fastjson.loads(data), json.loads(data)
    if "NaN" in str(data):
        assert math.isnan(parsed["temperature"]) and parsed["top_p"] == math.inf
    else:
        assert parsed == expected and type(parsed) is type(expected)


@pytest.mark.parametrize("data", [b"", b"{", b'{"a": }', b"\xff\xfe{}"])
def test_parse_refuses_what_json_loads_refuses_with_its_message(data: bytes) -> None:
    with pytest.raises(ValueError) as ours:
        fastjson.loads(data)
    with pytest.raises(ValueError) as theirs:
        json.loads(data)
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("data", [b"NaN", b'{"t": Infinity}', b"[-Infinity]", b"[1e999]"])
def test_finite_loads_refuses_what_is_not_a_finite_json_number(data: bytes) -> None:
    with pytest.raises(ValueError):
        fastjson.loads(data, finite=True)


def test_dumps_writes_a_lone_surrogate_as_its_escape() -> None:
    value = {"text": "a\ud800", "big": 2**70}  # neither is something orjson writes
    assert fastjson.dumps(value) == b'{"text":"a\\ud800","big":1180591620717411303424}'
    assert json.loads(fastjson.dumps(value)) == value
