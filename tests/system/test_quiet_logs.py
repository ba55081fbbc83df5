"""A seized daemon log is not a map of which groups met (issue 11): at INFO, a daemon's
log names none of its peers (fingerprint, key text, address), though they met, joined a
channel and synced; with ``[log] peers = true`` it does. Network rules: see daemons.py.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from meshnode.config import LogSettings, load, render
from meshnode.core.identity import fingerprint
from meshnode.paths import CONFIG
from meshnode.supervise import follow_until
from tests.system.daemons import Daemon, Mesh, wait_for

if TYPE_CHECKING:
    from collections.abc import Callable

CONVERGE = 30.0


def _traces(d: Daemon) -> dict[str, str]:
    """What names ``d`` in another node's log."""
    return {
        "fingerprint": fingerprint(d.key),
        "key text": d.key_text,
        "key in hex": d.key.hex(),
        "address": d.address,
        "host": d.host,
    }


def _log_since_last_start(d: Daemon) -> str:
    text = d.log_path.read_text(errors="replace")
    return text.rpartition(f"--- start {d.restarts} ---")[2]


def _show_peers(d: Daemon) -> None:
    path = d.data_dir / CONFIG
    path.write_text(render(dataclasses.replace(load(path), log=LogSettings(peers=True))))


def test_logs_name_peers_only_when_asked(make_mesh: Callable[[int], Mesh]) -> None:
    net = make_mesh(160)
    a = net.add("Local 12")
    net.start([a])
    b = net.add("Tenants", bootstrap=[a.address])
    net.start([b])
    a.client.create_channel("quiet")
    b.client.join(a.client.invite("quiet"))
    posted = {b.client.post("quiet", "we met").id}
    follow_until(a.data_dir, posted, "quiet", timeout=CONVERGE, what="the post to reach A")

    for reader, other in ((a, b), (b, a)):
        log = _log_since_last_start(reader)
        assert "session with" in log, reader.log_tail()
        leaked = [what for what, text in _traces(other).items() if text in log]
        assert leaked == [], f"{reader.name}'s log names {other.name}: {leaked}\n{log}"

    for d in (a, b):
        d.stop()
        _show_peers(d)
    net.start([a, b])
    for d, other in ((a, b), (b, a)):
        wait_for(d.data_dir, lambda s: s.peers >= 1, timeout=CONVERGE, what="the pair to meet")
        assert fingerprint(other.key) in _log_since_last_start(d), d.log_tail()
