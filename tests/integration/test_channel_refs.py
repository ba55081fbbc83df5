"""Every Node method that takes a channel takes a ChannelRef (issue 10, item 7).

Network rules: as in ``test_node.py``, whose ``node`` helper opens each node on
its own 127.0.0.N with port 0. Every test runs under ``trio.fail_after``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest
import trio

from meshnode.core.invite import parse_code
from meshnode.errors import AmbiguousChannel, StoreError, UnknownChannel
from tests.integration.test_node import node

if TYPE_CHECKING:
    from pathlib import Path


def invited_to(code: str) -> bytes:
    return parse_code(code, now=int(time.time())).channel_id


async def test_the_record_an_id_and_a_hex_prefix_name_the_channel(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with node(tmp_path, 1) as a:
            info = await a.create_channel("x")
            assert invited_to(await a.invite(await a.create_channel("y"))) != info.id
            for ref in (info, info.id, info.id.hex(), info.id.hex()[:8], "x"):
                assert invited_to(await a.invite(ref)) == info.id, ref
                found = a.find_channel(ref)
                assert found is not None
                assert found.id == info.id, ref
            posted = await a.post(info.id, "by id")
            assert posted.channel_id == info.id
            await a.post(info, "by record")
            assert [r.text async for r in a.bulletins(info, follow=False)] == [
                "by id",
                "by record",
            ]
            assert [r.text async for r in a.bulletins(info.id.hex()[:10], follow=False)] == [
                "by id",
                "by record",
            ]
            assert (await a.rekey(info)).epoch == 2  # (a channel starts at its founder's epoch 1)
            await a.leave(info.id)
            assert a.find_channel(info) is None
            with pytest.raises(UnknownChannel, match=info.id.hex()):
                await a.invite(info)


async def test_a_join_may_bring_a_second_channel_of_a_name(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with node(tmp_path, 1) as a, node(tmp_path, 2) as b:
            theirs = await a.create_channel("strike")
            ours = await b.create_channel("strike")
            joined = await b.join(await a.invite(theirs))
            assert (joined.id, joined.name) == (theirs.id, "strike")
            assert sorted(c.id for c in b.channels()) == sorted([theirs.id, ours.id])
            with pytest.raises(AmbiguousChannel, match="2 channels are named 'strike'") as e:
                await b.invite("strike")
            assert theirs.id.hex() in str(e.value)
            assert ours.id.hex() in str(e.value)
            for call in (
                lambda: b.post("strike", "which one?"),
                lambda: b.leave("strike"),
                lambda: b.rekey("strike"),
                lambda: anext(b.bulletins("strike", follow=False)),
            ):
                with pytest.raises(AmbiguousChannel):
                    await call()
            with pytest.raises(AmbiguousChannel):
                b.find_channel("strike")
            with pytest.raises(StoreError, match="already exists"):
                await b.create_channel("strike")
            await b.post(joined, "to theirs")
            await b.post(ours.id.hex()[:8], "to ours")
            assert [r.text async for r in b.bulletins(joined, follow=False)] == ["to theirs"]
            assert [r.text async for r in b.bulletins(ours.id, follow=False)] == ["to ours"]
            await b.leave(ours)
            assert invited_to(await b.invite("strike")) == theirs.id
