"""Channel membership across real daemons, driven through the CLI as organizers drive it:
create, one-time invites (used, revoked, for another group), join, members, remove,
and what a removed group still sees. Network rules: see daemons.py."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pytest
import trio

from meshnode.archive import Archive
from meshnode.core import codec, wire
from meshnode.core.bulletin import Bulletin, Kind
from meshnode.core.channel import KEY_UPDATE_TYPE
from meshnode.core.identity import Identity, fingerprint
from meshnode.core.membership import KeyUpdate
from meshnode.core.operation import CheckpointEntry, Frontier, OpType, epoch_id, sign_op
from meshnode.errors import MeshError, PeerDisconnected
from meshnode.home import DataDir
from meshnode.net import connect
from meshnode.supervise import follow_until
from tests.inbox import received
from tests.system.daemons import CLI, Daemon, Mesh, clean_env, wait_for

if TYPE_CHECKING:
    from collections.abc import Callable

    from meshnode.core.views import NodeStatus

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


def settle(d: Daemon, condition: Callable[[NodeStatus], object], what: str) -> None:
    """Until ``condition`` holds of ``d``'s status stream (or CONVERGE passed)."""
    wait_for(d.data_dir, condition, timeout=CONVERGE, what=what, explain=d.log_tail)


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
    assert "--offline" in refused(d, 5, "channel", "join", stranger_code)
    b.start()

    ok(c, "channel", "join", ok(b, "channel", "invite", "strike").strip())
    members = lines(ok(a, "channel", "members", "strike", "--json"))
    assert [m["name"] for m in members][:1] == ["Local 12"]
    assert {bytes.fromhex(m["key"]) for m in members} == {a.key, b.key, c.key}
    settle(b, lambda _: _members(b) == [3], "Tenants to learn that Bakers joined")

    before = {m.client.post("strike", f"{m.name} is here").id for m in (a, b, c)}
    follow_until(c.data_dir, before, "strike", timeout=CONVERGE, what="Bakers to read everyone")
    assert [ch.bulletins for ch in c.client.channels()] == [3]  # posts, not log operations

    removed = json.loads(ok(a, "channel", "remove", "strike", fingerprint(c.key), "--json"))
    assert removed["members"] == 2
    settle(b, lambda _: _epochs(b) == [removed["epoch"]], "Tenants to get the new epoch")
    settle(c, lambda status: status.removed, "Bakers to learn it was removed")
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


def _members(d: Daemon) -> list[int]:
    return [ch.members for ch in d.client.channels()]


def test_concurrent_rekeys_converge_without_the_removed(groups: list[Daemon]) -> None:
    a, b, c, d = groups
    a.client.create_channel("strike")
    for m in (b, c, d):
        m.client.join(a.client.invite("strike"))
    for m in (a, b, c, d):
        settle(m, lambda _, m=m: _members(m) == [4], f"{m.name} to see four members")
    # A removes C while B and C rekey, at the same moment: sibling epochs.
    with ThreadPoolExecutor(3) as pool:
        removed = pool.submit(a.client.remove, "strike", [c.key])
        rekeyed = pool.submit(b.client.rekey, "strike")
        also = pool.submit(c.client.rekey, "strike")  # the removed group rekeys too
        assert removed.result().epoch == rekeyed.result().epoch == 2
        with contextlib.suppress(MeshError):  # (if its removal reached it first)
            also.result()
    # Posts in the sibling epochs, before anyone merged them.
    early = {a.client.post("strike", "in A's epoch 2").id, b.client.post("strike", "in B's").id}
    # A, the most senior, merges them into epoch 3, which leaves C out.
    for m in (a, b, d):
        settle(
            m,
            lambda _, m=m: _epochs(m) == [3] and _members(m) == [3],
            f"{m.name} to reach the merged epoch",
        )
    posted = {m.client.post("strike", f"{m.name} after the merge").id for m in (a, b, d)}
    for m in (a, b, d):  # every bulletin stays readable by every remaining member
        follow_until(m.data_dir, posted | early, "strike", timeout=CONVERGE, what=f"{m.name}")
        assert not [u for u in m.client.unreadable() if u.channel == "strike"]
    assert not posted & {r.id for r in c.client.read("strike")}


def test_a_member_offline_across_two_rekeys_catches_up(groups: list[Daemon]) -> None:
    a, b, _, d = groups
    a.client.create_channel("strike")
    for m in (b, d):
        m.client.join(a.client.invite("strike"))
    settle(d, lambda _: _members(d) == [3], "Nurses to see three members")
    d.stop()
    a.client.rekey("strike")
    assert a.client.rekey("strike").epoch == 3
    news = a.client.post("strike", "while Nurses was away").id
    d.start()
    follow_until(
        d.data_dir, {news}, "strike", timeout=CONVERGE, what="Nurses: the news", explain=d.log_tail
    )
    assert _epochs(d) == [3]


def test_a_removed_member_cannot_take_the_channel_back(groups: list[Daemon]) -> None:
    """The removed group keeps its whole data directory and tries, as its own node: a
    key update of its own for the next epoch and an old-format one for the last
    epoch number; a fabricated "concurrent" removal of its remover citing old
    parents; a post at the old epoch; joining again. A stranger sends a key update
    of its own; a sock puppet holding the old epochs publishes rendezvous records
    under them. No member changes epoch, and neither gets a key."""
    a, b, c, d = groups
    a.client.create_channel("strike")
    for m in (b, c):
        m.client.join(a.client.invite("strike"))
    settle(a, lambda _: _members(a) == [3], "Local 12 to see three members")
    home = DataDir.resolve(c.data_dir)
    c.stop()  # (its data directory is what it keeps)
    after = a.client.remove("strike", [c.key])
    identity = home.load_identity()
    store = home.open_store(identity)
    try:
        archive = Archive(identity, store, clock=lambda: int(time.time()))
        (old,) = archive.channels()
        log = archive.memberships.log(old.id)
        assert log is not None
        before = log.heads()  # (c's node did not hear of its removal: it was down)
        secret = os.urandom(32)
        fake_remove = sign_op(
            identity,
            old.id,
            OpType.REMOVE,
            seq=log.next_seq(c.key),
            created_at=int(time.time()),
            parents=before,
            targets=(Frontier(a.key, 0, None),),
        )
        fake_epoch = sign_op(
            identity,
            old.id,
            OpType.EPOCH,
            seq=fake_remove.seq + 1,
            created_at=int(time.time()),
            parents=[fake_remove.id],
            parent_epochs=(old.current,),
            epoch_id=epoch_id(secret),
            checkpoint=(CheckpointEntry(c.key, ()),),
        )
        update = KeyUpdate(old.id, (fake_remove.raw, fake_epoch.raw), secret)
        own = archive.key_update(update, [a.key, b.key])
        last = archive.seal(
            [a.key, b.key],
            codec.pack([old.id, 2**32 - 1, secret]),
            content_type=KEY_UPDATE_TYPE,
            kind=Kind.KEY_UPDATE,
        )
        post = archive.seal(old, b"still here, at the old epoch")
    finally:
        store.close()

    stranger = Identity.from_seed(os.urandom(32), "Mallory")
    own_epoch = sign_op(
        stranger,
        old.id,
        OpType.EPOCH,
        seq=1,
        created_at=int(time.time()),
        parents=before,
        parent_epochs=(old.current,),
        epoch_id=epoch_id(secret),
        checkpoint=(CheckpointEntry(stranger.public_key, ()),),
    )
    foreign = Bulletin.seal(
        stranger,
        [a.key],
        KeyUpdate(old.id, (own_epoch.raw,), secret).encode(),
        seq=1,
        prev=None,
        now=int(time.time()),
        rng=os.urandom,
        content_type=KEY_UPDATE_TYPE,
        kind=Kind.KEY_UPDATE,
    )

    async def deposit(who: Identity, raws: tuple[bytes, ...], then: bytes = b"") -> None:
        with trio.fail_after(CONVERGE):
            async with connect.open_session(a.address, identity=who) as session:
                await session.send(wire.encode(wire.Hello(public=True, proofs=())))
                await session.send(wire.encode(wire.Deposit(recipient=a.key, raws=raws)))
                while not isinstance(wire.decode(await received(session)), wire.DepositAck):
                    pass
                if then:
                    with contextlib.suppress(PeerDisconnected):
                        await session.send(wire.encode(wire.Bulletins(raws=(then,))))

    trio.run(deposit, identity, (own.raw, last.raw), post.raw)
    trio.run(deposit, stranger, (foreign.raw,))
    (now,) = a.client.channels()
    assert (now.epoch, now.members) == (after.epoch, 2)
    members = {m.key for m in a.client.members("strike")}
    assert members == {a.key, b.key}
    ops = a.client.log("strike")
    assert not [op for op in ops if op.author == c.key and not op.void and op.kind == "remove"]
    assert post.id not in {r.id for r in a.client.read("strike")}
    # A sock puppet holding the old epochs (Nurses, given them) publishes rendezvous
    # records under them; the next rekey's key goes to the log's members alone.
    d.stop()
    puppet = DataDir.resolve(d.data_dir)
    with puppet.open_store(puppet.load_identity()) as held:
        held.save_channel(old, now=int(time.time()))
    d.start()
    again = a.client.rekey("strike")
    settle(b, lambda _: _epochs(b) == [again.epoch], "Tenants to get the new epoch")
    assert _epochs(d) == [old.epoch]
    assert {m.key for m in a.client.members("strike")} == {a.key, b.key}
    assert again.members == 2  # the key went to Tenants alone
    # Joining again, with a fresh code from a member who still has it.
    c.start()
    code = b.client.invite("strike")
    assert "refused" in refused(c, 1, "channel", "join", code)
    settle(
        c,
        lambda status: status.removed,
        "Bakers to learn it was removed (its notice waited with holders)",
    )


def test_an_offline_code_works_without_the_inviter_online(groups: list[Daemon]) -> None:
    a, b, _, _ = groups
    ok(a, "channel", "create", "strike")
    done = run(a, "channel", "invite", "strike", "--offline")
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == (
        "Anyone who sees this code can read strike until the next rekey, whatever its expiry."
    )
    a.stop()
    joined = ok(b, "channel", "join", done.stdout.strip())
    assert joined.startswith("Joined 'strike'"), joined
    posted = b.client.post("strike", "written before anyone added us").id
    a.start()
    b.client.add_peer(a.address)  # (or found through the channel's rendezvous)
    wait_for(
        a.data_dir,
        lambda _: _members(a) == [2],
        timeout=CONVERGE,
        what="Local 12 to redeem the offline code when Tenants met it",
        explain=lambda: a.log_tail() + b.log_tail(),
    )
    follow_until(
        a.data_dir,
        {posted},
        "strike",
        timeout=CONVERGE,
        what="Local 12 to hear Tenants' post, held until the add",
        explain=a.log_tail,
    )
    # A second holder of the code reads until the next rekey, as the warning says, but
    # the token is used: no member adds it.
    c = groups[2]
    assert ok(c, "channel", "join", done.stdout.strip()).startswith("Joined 'strike'")
    (invite,) = lines(ok(a, "channel", "invites", "strike", "--json"))
    assert invite["used_by"] == b.key.hex()
    a.client.rekey("strike")
    after = a.client.post("strike", "after the rekey").id
    follow_until(b.data_dir, {after}, "strike", timeout=CONVERGE, what="Tenants: the new epoch")
    assert after not in {r.id for r in c.client.read("strike")}
