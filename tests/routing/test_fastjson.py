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
