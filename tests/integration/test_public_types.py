"""One public type per concept (issue 12, item 6): what the node, the store and the
client hand back is exactly the class ``meshnode`` exports, with the same methods.

``isinstance`` is not enough: a subclass passes it while lacking, or adding, methods.
So every value handed back, and every value inside it (list items, record fields), of
a class defined in meshnode is checked with ``type(x) is getattr(meshnode, name)``.

Network rules: as in ``test_node.py``, whose ``node`` helper opens each node on its own
127.0.0.N with port 0; the client talks to an in-process control server over a Unix
socket in the test's folder. Every test runs under ``trio.fail_after``.
"""

from __future__ import annotations

import dataclasses
import inspect
from contextlib import aclosing
from typing import TYPE_CHECKING

import pytest
import trio

import meshnode
import meshnode.api
from meshnode.client import AsyncClient, Client
from meshnode.core import views
from meshnode.daemon import serve_control
from meshnode.home import DataDir
from meshnode.store import Contact
from tests.integration.test_node import node

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

CHEAP = {"opslimit": 1, "memlimit": 8192}


def _values(value: object) -> Iterator[object]:
    """``value`` and everything inside it: items of lists, tuples and maps, and the
    fields of the records the API hands out (:mod:`meshnode.core.views`)."""
    yield value
    if isinstance(value, (list, tuple)):
        for item in value:
            yield from _values(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _values(item)
    elif type(value).__module__ == views.__name__ and dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            yield from _values(getattr(value, f.name))


def exported(value: object) -> object:
    """``value``, once every meshnode object in it has proved to be of an exported class."""
    for v in _values(value):
        cls = type(v)
        if cls.__module__.partition(".")[0] == "meshnode":
            assert cls is getattr(meshnode, cls.__name__, None), (
                f"handed back a {cls.__module__}.{cls.__qualname__}, "
                f"which is not the class meshnode exports as {cls.__name__}"
            )
    return value


def test_the_check_sees_a_second_class_of_a_concept_and_an_unexported_one() -> None:
    second = type("Channel", (meshnode.Channel,), {"__module__": "meshnode.api"})
    with pytest.raises(AssertionError, match=r"meshnode\.api\.Channel"):
        exported([{"in": second.from_secret("strike", bytes(32))}])
    with pytest.raises(AssertionError, match=r"meshnode\.store\.contacts\.Contact"):
        exported(Contact(key=bytes(32), petname="x", verified=False, blocked=False, added_at=0))
    assert exported(meshnode.Channel.from_secret("strike", bytes(32))) is not None


def test_the_exported_classes_are_one_per_concept() -> None:
    classes = {
        name: obj
        for name in meshnode.__all__
        if inspect.isclass(obj := getattr(meshnode, name)) and not issubclass(obj, Exception)
    }
    assert {"Identity", "Channel", "Bulletin", "BulletinRecord", "NodeStatus"} <= set(classes)
    for name, cls in classes.items():
        assert cls.__name__ == name
        assert cls.__module__ != "meshnode.api", f"{name} is still api's own class"
        assert not [o for o in classes.values() if o is not cls and issubclass(o, cls)], name
    # The API module defines no subclass of a core class, only the system's providers.
    own = [c for c in vars(meshnode.api).values() if inspect.isclass(c)]
    assert [c.__name__ for c in own if c.__module__ == "meshnode.api"] == ["SystemProviders"]


async def test_the_node_store_and_client_hand_back_the_exported_classes(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with node(tmp_path, 1) as a, node(tmp_path, 2) as b:
            assert type(a.identity) is meshnode.Identity
            info = exported(await a.create_channel("strike"))
            assert type(info) is meshnode.ChannelInfo
            exported(await b.join(await a.invite(info)))
            exported(a.channels())
            exported(a.find_channel("strike"))
            exported(a.peers())
            exported(a.members(info))
            exported(a.invites(info))
            exported(a.log(info))
            posted = exported(await a.post(info, "Strike vote Friday 6pm"))
            assert type(posted) is meshnode.BulletinRecord
            exported(await a.post_public("Solidarity"))
            exported(await a.endorse(posted.id))
            exported(a.add_contact("Tenants", b.identity.key_text))
            exported(await a.send(["Tenants"], "Can you bring 10 people?"))
            exported(a.verify_contact("Tenants"))
            exported(a.contacts())
            exported([r async for r in a.bulletins(follow=False)])
            exported(a.unreadable())
            status = exported(a.status())
            assert type(status) is meshnode.NodeStatus
            async with aclosing(a.changes()) as changes:
                exported(await anext(changes))
            exported(await a.rekey(info))
            exported(await a.remove(info, [b.identity.key_text]))

            async with trio.open_nursery() as nursery:
                path = await nursery.start(serve_control, a, tmp_path)
                client = AsyncClient(Client(path))
                assert type(client) is meshnode.AsyncClient
                exported(await client.status())
                exported(await client.peers())
                made = exported(await client.create_channel("picket"))
                exported(await client.channels())
                exported(await client.members(made))
                exported(await client.invites(made))
                exported(await client.log(made))
                exported(await client.post(made, "Picket at 7am"))
                exported(await client.read(made))
                exported(await client.contacts())
                exported(await client.unreadable())
                exported(await client.rekey(made))
                nursery.cancel_scope.cancel()

            # The node's identity and its store's channels have every method of the
            # public classes: the convenience that the subclasses used to keep to themselves.
            meshnode.save_identity(a.identity, tmp_path / "a.key", **CHEAP)
            assert meshnode.load_identity(tmp_path / "a.key").seed == a.identity.seed
            identity = a.identity

    store = DataDir(tmp_path / "node1").open_store(identity)
    try:
        held = store.channels()
        assert [type(c) for c in held] == [meshnode.Channel, meshnode.Channel]
        channel = store.channel(info.id)
        assert type(channel) is meshnode.Channel
        code = channel.invite(by=identity, expires=3600)
        assert meshnode.Channel.from_invite(code).id == info.id
        assert type(channel.rekey()) is meshnode.Channel
    finally:
        store.close()
