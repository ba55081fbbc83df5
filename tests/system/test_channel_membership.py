"""Channel membership across real daemons, driven through the CLI as organizers drive it:
create, one-time invites (used, revoked, for another group), join, members, remove,
and what a removed group still sees. Network rules: see daemons.py."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from meshnode.core.identity import fingerprint
from tests.system.daemons import CLI, Daemon, Mesh, clean_env, follow_until, wait_for

CONVERGE = 30.0


def run(d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "--data-dir", str(d.data_dir), *args],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ok(d: Daemon, *args: str) -> str:
    done = run(d, *args)
    assert done.returncode == 0, (args, done.stderr)
    return done.stdout


def refused(d: Daemon, code: int, *args: str) -> str:
    """A mistake: one line on stderr and its exit code."""
    done = run(d, *args)
    assert done.returncode == code, (args, done.returncode, done.stderr)
    assert done.stderr.count("\n") == 1, done.stderr
    return done.stderr


def lines(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines()]


@pytest.fixture
def groups(make_mesh: Callable[[int], Mesh]) -> list[Daemon]:
    net = make_mesh(120)
    local12 = net.add("Local 12")
    net.start([local12])
    others = [net.add(n, bootstrap=[local12.address]) for n in ("Tenants", "Bakers", "Nurses")]
    net.start(others)
    return [local12, *others]


def test_invite_join_members_remove(groups: list[Daemon]) -> None:
    a, b, c, d = groups
    ok(a, "channel", "create", "strike")
    code = ok(a, "channel", "invite", "strike").strip()
    joined = ok(b, "channel", "join", code)
    # B has no petname for A yet: the inviter shows as its fingerprint
    assert joined.strip() == f"Joined 'strike' (2 members), invited by {fingerprint(a.key)}."

    # A one-time code: a second use, a revoked code, a code for another group.
    assert "used already" in refused(c, 1, "channel", "join", code)
    for_b = ok(a, "channel", "invite", "strike", "--for", b.key_text).strip()
    assert "for another group" in refused(c, 1, "channel", "join", for_b)
    revoked = ok(a, "channel", "invite", "strike").strip()
    invites = lines(ok(a, "channel", "invites", "strike", "--json"))
    assert len(invites) == 3
    for unused in (i for i in invites if i["used_by"] is None):
        ok(a, "channel", "revoke", "strike", str(unused["id"])[:16])
    assert "revoked" in refused(c, 1, "channel", "join", revoked)
    # The inviter's node is down: exit 5, one line.
    stranger_code = ok(b, "channel", "invite", "strike").strip()
    b.stop()
    assert "could not reach" in refused(d, 5, "channel", "join", stranger_code)
    b.start()

    ok(c, "channel", "join", ok(b, "channel", "invite", "strike").strip())
    members = lines(ok(a, "channel", "members", "strike", "--json"))
    assert [m["name"] for m in members][:1] == ["Local 12"]
    assert {bytes.fromhex(m["key"]) for m in members} == {a.key, b.key, c.key}
    wait_for(
        b.data_dir,
        lambda _: [ch.members for ch in b.client.channels()] == [3],
        timeout=CONVERGE,
        what="Tenants to learn that Bakers joined",
        explain=b.log_tail,
    )

    before = {m.client.post("strike", f"{m.name} is here").id for m in (a, b, c)}
    follow_until(c.data_dir, before, "strike", timeout=CONVERGE, what="Bakers to read everyone")

    removed = json.loads(ok(a, "channel", "remove", "strike", fingerprint(c.key), "--json"))
    assert removed["members"] == 2
    wait_for(
        b.data_dir,
        lambda _: [ch.epoch for ch in b.client.channels()] == [removed["epoch"]],
        timeout=CONVERGE,
        what="Tenants to get the new epoch",
        explain=b.log_tail,
    )
    wait_for(
        c.data_dir,
        lambda status: status.removed,
        timeout=CONVERGE,
        what="Bakers to learn it was removed",
        explain=c.log_tail,
    )
    by = f"removed from strike by {fingerprint(a.key)}"  # (Bakers has no petname for A)
    assert by in ok(c, "channel", "list")
    assert by in ok(c, "status")
    assert "removed" in refused(c, 1, "post", "strike", "still here?")

    after = a.client.post("strike", "after the removal").id
    follow_until(b.data_dir, {after}, "strike", timeout=CONVERGE, what="Tenants: the new post")
    assert after not in {r.id for r in c.client.read("strike")}
    trail = ok(a, "channel", "log", "strike")
    assert "Local 12 created the channel" in trail
    assert f"removed {fingerprint(c.key)}" in trail or "removed Bakers" in trail


def _epochs(d: Daemon) -> list[int]:
    return [ch.epoch for ch in d.client.channels()]


def test_concurrent_rekeys_converge_without_the_removed(groups: list[Daemon]) -> None:
    a, b, c, d = groups
    a.client.create_channel("strike")
    for m in (b, c, d):
        m.client.join(a.client.invite("strike"))
    for m in (a, b, c, d):
        wait_for(
            m.data_dir,
            lambda _, m=m: [ch.members for ch in m.client.channels()] == [4],
            timeout=CONVERGE,
            what=f"{m.name} to see four members",
            explain=m.log_tail,
        )
    # A removes C while B rekeys, at the same moment: two sibling epochs.
    with ThreadPoolExecutor(2) as pool:
        removed = pool.submit(a.client.remove, "strike", [c.key])
        rekeyed = pool.submit(b.client.rekey, "strike")
        assert removed.result().epoch == rekeyed.result().epoch == 2
    # A, the most senior, merges them into epoch 3, which leaves C out.
    for m in (a, b, d):
        wait_for(
            m.data_dir,
            lambda _, m=m: _epochs(m) == [3] and [ch.members for ch in m.client.channels()] == [3],
            timeout=CONVERGE,
            what=f"{m.name} to reach the merged epoch",
            explain=m.log_tail,
        )
    posted = {m.client.post("strike", f"{m.name} after the merge").id for m in (a, b, d)}
    for m in (a, b, d):
        follow_until(m.data_dir, posted, "strike", timeout=CONVERGE, what=f"{m.name}: posts")
        assert not [u for u in m.client.unreadable() if u.channel == "strike"]
    assert not posted & {r.id for r in c.client.read("strike")}


def test_a_member_offline_across_two_rekeys_catches_up(groups: list[Daemon]) -> None:
    a, b, _, d = groups
    a.client.create_channel("strike")
    for m in (b, d):
        m.client.join(a.client.invite("strike"))
    wait_for(
        d.data_dir,
        lambda _: [ch.members for ch in d.client.channels()] == [3],
        timeout=CONVERGE,
        what="Nurses to see three members",
        explain=d.log_tail,
    )
    d.stop()
    a.client.rekey("strike")
    assert a.client.rekey("strike").epoch == 3
    news = a.client.post("strike", "while Nurses was away").id
    d.start()
    follow_until(d.data_dir, {news}, "strike", timeout=CONVERGE, what="Nurses: the news",
                 explain=d.log_tail)
    assert _epochs(d) == [3]
