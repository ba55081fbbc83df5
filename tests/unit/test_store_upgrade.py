"""A data directory written by meshnode 0.1.0 opens with today's code and stays readable.

The fixture (``tests/fixtures/data-0.1.0``) was made by ``make_data_0_1_0.py`` run
against the 0.1.0 tree: Local 12 created ``strike-support``, invited Tenants United,
both posted (Tenants' post may not have reached Local 12 before it closed), Local 12
rekeyed and posted again, and posted one public bulletin.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from meshnode.archive import Archive
from meshnode.core.bulletin import Bulletin
from meshnode.errors import MeshError
from meshnode.home import DataDir
from meshnode.store import MIGRATIONS

FIXTURE = Path(__file__).parent.parent / "fixtures" / "data-0.1.0"


def test_a_0_1_0_directory_opens_and_reads(tmp_path: Path) -> None:
    shutil.copytree(FIXTURE / "local12", tmp_path / "local12")
    home = DataDir.resolve(tmp_path / "local12")
    identity = home.load_identity()
    with home.open_store(identity) as store:
        assert store.schema_version == len(MIGRATIONS)
        (channel,) = store.channels()
        assert channel.name == "strike-support"
        assert sorted(k.number for k in channel.keys) == [0, 1]
        assert channel.epoch == 1
        assert store.channel_root(channel.id) is None  # no membership log until upgraded
        archive = Archive(identity, store, clock=lambda: 1_800_000_000)
        texts = [r.text for r in archive.history(channel)]
        assert texts[0] == "Strike vote Friday 6pm"
        assert texts[-1] == "Epoch one: meet at the hall"
        assert "Solidarity forever" in [r.text for r in archive.history(None)]


def test_a_0_1_0_channel_upgrades_and_hands_its_log_to_the_kept(tmp_path: Path) -> None:
    archives = {}
    for name in ("local12", "tenants"):
        shutil.copytree(FIXTURE / name, tmp_path / name)
        home = DataDir.resolve(tmp_path / name)
        identity = home.load_identity()
        archives[name] = Archive(identity, home.open_store(identity), clock=lambda: 1_800_000_000)
    a, b = archives["local12"], archives["tenants"]
    (old,) = a.channels()
    upgraded, carriers, grant = a.upgrade(old, [b.identity.public_key])
    log = a.memberships.log(old.id)
    assert log is not None
    assert set(log.members()) == {a.identity.public_key, b.identity.public_key}
    assert upgraded.epoch == 2  # after the 0.1.0 epochs 0 and 1
    assert a.store.channel_root(old.id) == log.root.id
    assert len(carriers) == 3  # create, add, epoch start
    with pytest.raises(MeshError, match="has a membership log already"):
        a.upgrade(upgraded, [])

    handed = Bulletin.from_bytes(a.hand_over(grant, [b.identity.public_key]).raw)
    assert b.ingest(handed).channel_changed is None  # from a group b has no name for
    b.store.add_contact("Local 12", a.identity.public_key, now=1_800_000_000)
    got = b.ingest(Bulletin.from_bytes(a.hand_over(grant, [b.identity.public_key]).raw))
    assert got.channel_changed is not None
    assert got.channel_changed.current == upgraded.current
    after = a.seal(upgraded, b"written after the upgrade")
    b.ingest(Bulletin.from_bytes(after.raw))
    assert [r.text for r in b.history(got.channel_changed)][-1] == "written after the upgrade"
    for archive in archives.values():
        archive.store.close()
