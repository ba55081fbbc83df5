"""Properties of reading text codes (identity.md, "Reading a code").

However a code is broken up by separators and whatever sentence surrounds it,
the reader finds exactly the data written; and it raises only TextCodeError.
"""

from __future__ import annotations

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode.core import textcode
from meshnode.core.textcode import TextCodeError

SETTINGS = settings(max_examples=300, deadline=None)

separators = st.text(alphabet=" \t\r\n-_", min_size=1, max_size=3)
# What may stand right after a code: a character that ends a run, then anything.
endings = st.tuples(st.sampled_from(".,;:!?)]}>\"'&#/u\u00bb\u212a"), st.text(max_size=30))


@SETTINGS
@given(
    data=st.binary(max_size=200),
    before=st.text(max_size=30).filter(lambda t: "tc1" not in t.lower()),
    breaks=st.lists(st.tuples(st.integers(0, 400), separators), max_size=6),
    ending=endings | st.just(("", "")),
    upper=st.booleans(),
)
def test_a_code_reads_back_wherever_it_stands(
    data: bytes,
    before: str,
    breaks: list[tuple[int, str]],
    ending: tuple[str, str],
    upper: bool,
) -> None:
    body = textcode.encode("tc1", data)[3:]
    for at, sep in sorted(breaks, reverse=True):
        at = min(at, len(body))
        body = body[:at] + sep + body[at:]
    code = "tc1" + (body.upper() if upper else body)
    text = before + " " + code + "".join(ending)
    assert textcode.decode("tc1", text, max_size=200) == data


@SETTINGS
@given(text=st.text(max_size=300), prefix=st.sampled_from(["tc1", ""]))
def test_reading_raises_only_text_code_error(text: str, prefix: str) -> None:
    with contextlib.suppress(TextCodeError):
        textcode.decode("tc1", prefix + text)
