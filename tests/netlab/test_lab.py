"""Six daemons in six network namespaces (``../shared/tools/netns-lab.sh``), one
channel among them, driven through the CLI: delay and loss on two links, a 3|3
partition healed, and a member killed with SIGKILL right after its post returns.

Root only (network namespaces); elsewhere the module skips. Network rules: see lab.py.
Each test prints its figure (``pytest -s`` shows it); docs/reliability.md records them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import time
from typing import TYPE_CHECKING

import pytest

from meshnode.client import connect
from meshnode.paths import STORE
from tests.netlab.lab import LAB, LabNode, following, lab, start_all
from tests.system.daemons import wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

pytestmark = [
    pytest.mark.netlab,
    pytest.mark.skipif(
        not hasattr(os, "geteuid") or os.geteuid() != 0,
        reason="network namespaces need root (CI runs as root)",
    ),
]

NODES = 6
CHANNEL = "lab"
CONVERGE = 60.0


def post(node: LabNode, text: str) -> str:
    """``meshnode post --json``: returns once the node acknowledged it; the id in hex."""
    return str(json.loads(node.cli("post", "--json", CHANNEL, text))["id"])


def every(nodes: Sequence[LabNode]) -> list[int]:
    return [n.index for n in nodes]


def logs(nodes: Sequence[LabNode]) -> str:
    return "\n".join(n.log_tail() for n in nodes)


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[LabNode]]:
    """The lab up, six daemons running, all six groups members of ``lab``: node 1
    created it and invited each other node, which joined with its one-time code."""
    assert LAB.is_file(), f"{LAB} is missing: shared/ must sit beside the repository"
    root = tmp_path_factory.mktemp("netlab")
    lab("up", str(NODES))
    made = [LabNode(index=i, data_dir=root / f"n{i}") for i in range(1, NODES + 1)]
    try:
        for node in made:
            node.init()
        start_all(made)
        first = made[0]
        first.cli("channel", "create", CHANNEL)
        for node in made[1:]:
            node.cli("channel", "join", first.cli("channel", "invite", CHANNEL).strip())
        for node in made:
            wait_for(
                node.data_dir,
                lambda _, node=node: (
                    [c.members for c in connect(node.data_dir).channels()] == [NODES]
                ),
                timeout=CONVERGE,
                what=f"n{node.index} to count {NODES} members",
                explain=node.log_tail,
            )
        yield made
    finally:
        try:
            for node in made:
                node.stop()
        finally:
            lab("down")
            print(logs(made))


def test_delay_and_loss_on_two_links(nodes: list[LabNode]) -> None:
    """50 ms delay and 5 % loss on the egress of n2 and n5: posts from every node
    reach every node."""
    impaired = ("mnt-v2", "mnt-v5")
    try:
        how = [lab("netem", link, "delay", "50ms", "loss", "5%").strip() for link in impaired]
        with following(CHANNEL, nodes) as arrivals:
            returned: dict[str, float] = {}
            for k in range(3):
                for n in nodes:
                    returned[post(n, f"n{n.index} over a lossy link, {k}")] = time.monotonic()
            ids = set(returned)
            arrivals.wait(every(nodes), ids, timeout=CONVERGE, what="every post everywhere")
            spread = sorted(
                max(arrivals.seen[n][i] for n in every(nodes)) - returned[i] for i in ids
            )
        print(
            f"netlab delay+loss ({'; '.join(how)}): {len(ids)} posts on all {NODES} nodes, "
            f"from post returned to the last node: median {spread[len(spread) // 2]:.2f} s, "
            f"max {spread[-1]:.2f} s"
        )
    finally:
        for link in impaired:
            lab("netem", link, "clear")


def test_partition_then_heal(nodes: list[LabNode]) -> None:
    """A 3|3 partition with posts on both sides; after the heal every node holds the
    union within 60 s."""
    left, right = nodes[:3], nodes[3:]
    try:
        for node in left:
            lab("partition", str(node.index), *(str(n.index) for n in right))
        with following(CHANNEL, nodes) as arrivals:
            ours = {post(n, f"n{n.index} on the left") for n in left}
            theirs = {post(n, f"n{n.index} on the right") for n in right}
            arrivals.wait(every(left), ours, timeout=CONVERGE, what="the left side's posts")
            arrivals.wait(every(right), theirs, timeout=CONVERGE, what="the right side's posts")
            # Each side holds its own posts, and none crossed the cut.
            assert not any(arrivals.ids(n.index) & theirs for n in left)
            assert not any(arrivals.ids(n.index) & ours for n in right)
            healed = time.monotonic()
            for node in left:
                lab("heal", str(node.index))
            last = arrivals.wait(
                every(nodes), ours | theirs, timeout=CONVERGE, what="the union after the heal"
            )
        print(
            f"netlab partition: union of {len(ours | theirs)} posts on all {NODES} nodes "
            f"{last - healed:.1f} s after the heal"
        )
    finally:
        for node in left:
            lab("heal", str(node.index))


# SQLite 3.40.0 to 3.41.0 (Debian 12 ships 3.40.1) report "NULL value in T.C" for a
# NOT NULL column of a WITHOUT ROWID table whose primary key lists its columns in
# another order than the table does (channel_secrets, for one), whatever the data.
FALSE_NULL = re.compile(r"NULL value in (\w+)\.(\w+)")


def integrity(store: Path) -> list[str]:
    """``PRAGMA integrity_check`` on a store nobody is writing, opened read-only: its
    complaints, each "NULL value" one first checked against the column itself."""
    with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as db:
        found = [str(row[0]) for row in db.execute("PRAGMA integrity_check")]
        if found == ["ok"]:
            return []
        real = []
        for problem in found:
            null = FALSE_NULL.fullmatch(problem)
            if null is not None:
                table, column = null.groups()
                query = f'SELECT count(*) FROM "{table}" WHERE "{column}" IS NULL'
                if db.execute(query).fetchone()[0] == 0:
                    continue  # the SQLite bug above: the column holds no NULL
            real.append(problem)
        return real


def stored(store: Path, ids: set[str]) -> set[str]:
    with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT id FROM bulletins")
        return ids & {bytes(row[0]).hex() for row in rows}


def test_kill_9_after_post_loses_nothing_acknowledged(nodes: list[LabNode]) -> None:
    """SIGKILL of n6 right after its posts return: its store passes
    ``integrity_check``, holds every acknowledged post, and once restarted in its
    namespace every node reads them (and n6 what was posted while it was down)."""
    victim, others = nodes[-1], nodes[:-1]
    with following(CHANNEL, nodes) as arrivals:
        acked = {post(victim, f"n6 before the crash, {k}") for k in range(5)}
        victim.kill9()
        store = victim.data_dir / STORE
        assert integrity(store) == []
        assert stored(store, acked) == acked
        meanwhile = post(others[0], "n1 while n6 is down")
        restart = time.monotonic()
        victim.spawn()
        victim.wait_ready()
        arrivals.follow(victim)
        last = arrivals.wait(
            every(nodes), acked | {meanwhile}, timeout=CONVERGE, what="the posts around the crash"
        )
    print(
        f"netlab kill -9: n6 ready and all {len(acked) + 1} posts on all {NODES} nodes "
        f"{last - restart:.1f} s after the restart began"
    )
