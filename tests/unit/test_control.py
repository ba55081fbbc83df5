"""The control protocol's decoding side: hostile frames are ControlProtocolErrors.

Regression cases found by the fuzzer (``tests/fuzz``, target ``control``).
"""

from __future__ import annotations

import pytest

from meshnode import control
from meshnode.control import ControlProtocolError
from meshnode.core import codec, views


def _body(args: dict[str, object]) -> bytes:
    return codec.pack({"v": control.VERSION, "op": "show", "args": args})


def test_a_request_round_trips_through_a_frame() -> None:
    frame = control.frame(control.request("post", channel="strike", text="hi"))
    assert control.frame_length(frame[:4]) == len(frame) - 4
    op, args = control.parse_request(control.parse_frame(frame[4:]))
    assert (op, args) == ("post", {"channel": "strike", "text": "hi"})


@pytest.mark.parametrize("kind", [[], ["peer"], {"a": 1}, 7, None, b"peer"])
def test_a_record_type_that_is_not_text_is_refused(kind: object) -> None:
    # A list here raised TypeError (unhashable) out of RECORD_TYPES.get.
    body = _body({"records": [{"$type": kind}]})
    with pytest.raises(ControlProtocolError, match="unknown record type"):
        control.parse_request(control.parse_frame(body))


@pytest.mark.parametrize("depth", [control.MAX_DEPTH + 1, 500, 1000])
def test_deeply_nested_values_are_refused_not_a_recursion_error(depth: int) -> None:
    # 500 nested arrays decode within msgpack's own limit, then decode_value's
    # recursion raised RecursionError.
    empty_args = codec.pack({"v": control.VERSION, "op": "x", "args": {}})
    assert empty_args.endswith(b"\x80")
    body = empty_args[:-1] + b"\x81\xa1a" + b"\x91" * depth + b"\x90"
    with pytest.raises(ControlProtocolError, match="nested deeper"):
        control.parse_request(control.parse_frame(body))


def test_values_nested_within_the_limit_decode() -> None:
    value: object = []
    for _ in range(control.MAX_DEPTH - 3):  # (the frame's map and the args map count)
        value = [value]
    _op, args = control.parse_request(control.parse_frame(_body({"a": value})))
    assert args == {"a": value}


def test_records_nested_in_lists_still_decode() -> None:
    record = {f: None for f in views.PeerInfo.__dataclass_fields__} | {"$type": "peer"}
    _op, args = control.parse_request(control.parse_frame(_body({"peers": [[record]]})))
    assert isinstance(args["peers"][0][0], views.PeerInfo)


def test_a_deeply_nested_record_type_is_refused_without_quoting_it() -> None:
    # Written by hand: the packer will not nest 600 levels. repr() of the value
    # raised RecursionError in the error message.
    deep = b"\x91" * 600 + b"\x90"
    frame = b"\x83\xa1v\x01\xa2op\xa1x\xa4args\x81\xa1r\x81\xa5$type" + deep
    with pytest.raises(ControlProtocolError, match=r"nested deeper|unknown record type a list"):
        control.parse_request(control.parse_frame(frame))
