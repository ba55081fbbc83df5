"""Fixtures that run real daemons (see daemons.py for the network-test rules)."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import pytest

from tests.system.daemons import Daemon, Mesh

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

MESH_SIZE = 12
MESH_SEED = 4


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Daemon]]:
    """Twelve running daemons; each after the first was initialised with one random
    earlier node (seeded) as its bootstrap. Tests may stop and restart daemons but
    leave them running."""
    rng = random.Random(MESH_SEED)
    net = Mesh(tmp_path_factory.mktemp("mesh"))
    try:
        for i in range(MESH_SIZE):
            boot = [net.daemons[rng.randrange(i)].address] if i else []
            net.start([net.add(f"node-{i:02d}", bootstrap=boot)])
        yield net.daemons
    finally:
        net.close()
        print(net.logs())


@pytest.fixture
def make_mesh(tmp_path: Path) -> Iterator[Callable[[int], Mesh]]:
    """Private meshes for one test, on hosts after the shared mesh's; stopped after it."""
    made: list[Mesh] = []

    def make(first_host: int) -> Mesh:
        net = Mesh(tmp_path / f"mesh-{len(made)}", first_host=first_host)
        made.append(net)
        return net

    try:
        yield make
    finally:
        for net in made:
            net.close()
            print(net.logs())
