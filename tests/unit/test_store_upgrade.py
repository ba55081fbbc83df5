"""A data directory written by meshnode 0.1.0 opens with today's code and stays readable.

The fixture (``tests/fixtures/data-0.1.0``) was made by ``make_data_0_1_0.py`` run
against the 0.1.0 tree: Local 12 created ``strike-support``, invited Tenants United,
both posted (Tenants' post may not have reached Local 12 before it closed), Local 12
rekeyed and posted again, and posted one public bulletin.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from meshnode.home import DataDir
from meshnode.net.archive import Archive
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
