"""The direct-delivery machine, over real stores as its mailboxes and an in-memory
network of machines: deposits, acks, holders, collecting mail, and who may ask for
what (docs/spec/gossip.md, "Direct delivery")."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

from meshnode.core import records, wire
from meshnode.core.bulletin import Bulletin
from meshnode.core.delivery import (
    MAX_HOLDERS,
    MAX_UNACKED,
    Action,
    Charge,
    Delivery,
    Send,
    Take,
    is_holder,
)
from meshnode.core.gossip import Offence
from meshnode.store import Store
from tests.conftest import make_identity

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from meshnode.core.channel import Channel
    from meshnode.core.identity import Identity

NOW = 1_800_000_000


@dataclass
class Judge:
    holder: bool = True
    blocked_keys: set[bytes] = field(default_factory=set)
    known: set[bytes] = field(default_factory=set)

    def standing(self, author: bytes, recipient: bytes) -> bool:
        return author in self.known

    def holds_for(self, recipient: bytes) -> bool:
        return self.holder

    def blocked(self, key: bytes) -> bool:
        return key in self.blocked_keys


@dataclass
class Peer:
    identity: Identity
    store: Store
    judge: Judge
    machine: Delivery
    taken: list[Bulletin] = field(default_factory=list)
    charged: list[tuple[bytes, Offence]] = field(default_factory=list)

    @property
    def key(self) -> bytes:
        return self.identity.public_key


class Net:
    """Machines that hand each other their Send actions until nothing moves."""

    def __init__(self, tmp_path: Path) -> None:
        self._tmp = tmp_path
        self.peers: dict[bytes, Peer] = {}

    def add(self, name: str) -> Peer:
        identity = make_identity(name)
        store = Store.open(
            self._tmp / f"{name}.db", seal_key=identity.store_seal_key(), owner=identity.public_key
        )
        judge = Judge()
        peer = Peer(identity, store, judge, Delivery(identity, store, judge))
        self.peers[peer.key] = peer
        return peer

    def run(self, sender: Peer, actions: list[Action]) -> None:
        queue = [(sender, a) for a in actions]
        while queue:
            at, action = queue.pop(0)
            match action:
                case Take():
                    at.taken.append(action.bulletin)
                    at.store.add(action.bulletin, now=NOW)
                case Charge():
                    at.charged.append((action.peer, action.offence))
                case Send():
                    there = self.peers[action.peer]
                    got = there.machine.receive(at.key, action.message, now=NOW)
                    queue.extend((there, a) for a in got)

    def close(self) -> None:
        for p in self.peers.values():
            p.store.close()


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    n = Net(tmp_path)
    yield n
    n.close()


def direct(author: Identity, to: Identity, *, now: int = NOW, **kw: int) -> Bulletin:
    return Bulletin.seal(
        author, [to.public_key], b"for you", seq=1, prev=None, now=now, rng=os.urandom, **kw
    )


def test_a_deposit_at_the_recipients_own_node_is_taken_and_acknowledged(net: Net) -> None:
    alice, bob = net.add("alice"), net.add("bob")
    b = direct(alice.identity, bob.identity)
    alice.store.add(b, now=NOW)
    alice.store.queue_delivery(b, [bob.key])
    net.run(alice, [alice.machine.deposit(bob.key, bob.key, b.raw)])
    assert bob.taken == [b]
    assert alice.machine.due(now=NOW) == []  # delivered: the outbox is done with it


def test_a_holder_keeps_mail_until_the_recipient_collects_it(net: Net) -> None:
    alice, holder, bob = net.add("alice"), net.add("holder"), net.add("bob")
    b = direct(alice.identity, bob.identity)
    alice.store.add(b, now=NOW)
    alice.store.queue_delivery(b, [bob.key])
    (attempt,) = alice.machine.due(now=NOW)
    assert attempt.holders == MAX_HOLDERS
    net.run(alice, [alice.machine.deposit(holder.key, bob.key, b.raw)])
    assert holder.store.mail_count() == 1
    assert alice.machine.due(now=NOW)[0].holders == MAX_HOLDERS - 1
    net.run(bob, bob.machine.collect([holder.key]))
    assert bob.taken == [b]
    assert holder.store.mail_count() == 0  # forgotten on Bob's MAIL_ACK


def test_a_node_that_is_no_holder_refuses_mail_and_charges_the_depositor(net: Net) -> None:
    alice, other, bob = net.add("alice"), net.add("other"), net.add("bob")
    other.judge.holder = False
    b = direct(alice.identity, bob.identity)
    got = other.machine.receive(alice.key, wire.Deposit(recipient=bob.key, raws=(b.raw,)), now=NOW)
    assert Charge(alice.key, Offence.MISDIRECTED) in got
    assert got[-1] == Send(alice.key, wire.DepositAck(stored=(), refused=(wire.BulletinId(b.id),)))
    assert other.store.mail_count() == 0


def test_only_valid_direct_bulletins_travel_and_anything_else_costs_the_carrier(
    net: Net, channel: Channel
) -> None:
    alice, bob = net.add("alice"), net.add("bob")
    public = Bulletin.seal(alice.identity, None, b"hi", seq=1, prev=None, now=NOW, rng=os.urandom)
    junk = b"\x93" + b"junk" * 20
    deposit = wire.Deposit(recipient=bob.key, raws=(public.raw, junk))
    got = bob.machine.receive(alice.key, deposit, now=NOW)
    assert got.count(Charge(alice.key, Offence.INVALID_BULLETIN)) == 2
    got = bob.machine.receive(alice.key, wire.Mail(raws=(public.raw,), more=False), now=NOW)
    assert got == [Charge(alice.key, Offence.INVALID_BULLETIN)]


def test_what_is_expired_sealed_for_another_or_from_a_blocked_group_is_refused(
    net: Net,
) -> None:
    alice, holder = net.add("alice"), net.add("holder")
    bob, carol = net.add("bob"), net.add("carol")
    old = direct(alice.identity, bob.identity, now=NOW - 100, expires_at=NOW - 1)
    for_carol = direct(alice.identity, carol.identity)
    holder.judge.blocked_keys.add(alice.key)
    cases = [
        (holder, bob.key, old),  # expired
        (bob, bob.key, for_carol),  # made out to Bob, sealed for Carol: no slot for him
        (holder, bob.key, direct(alice.identity, bob.identity)),  # a blocked author
    ]
    for at, recipient, b in cases:
        deposit = wire.Deposit(recipient=recipient, raws=(b.raw,))
        refused = wire.DepositAck(stored=(), refused=(wire.BulletinId(b.id),))
        assert at.machine.receive(alice.key, deposit, now=NOW) == [Send(alice.key, refused)]
    assert holder.store.mail_count() == 0
    assert bob.taken == []


def test_mail_is_handed_only_to_the_session_of_its_recipient(net: Net) -> None:
    alice, holder, bob, mallory = (
        net.add("alice"), net.add("holder"), net.add("bob"), net.add("mallory")
    )  # fmt: skip
    b = direct(alice.identity, bob.identity)
    net.run(alice, [alice.machine.deposit(holder.key, bob.key, b.raw)])
    got = holder.machine.receive(mallory.key, wire.MailRequest(limit=wire.MAX_MAIL), now=NOW)
    assert got == [Send(mallory.key, wire.Mail(raws=(), more=False))]
    holder.machine.receive(mallory.key, wire.MailAck(ids=(wire.BulletinId(b.id),)), now=NOW)
    assert holder.store.mail_count() == 1  # Mallory's ack forgets nothing of Bob's


def test_mail_beyond_one_answer_is_asked_for_again(net: Net) -> None:
    alice, holder, bob = net.add("alice"), net.add("holder"), net.add("bob")
    for n in range(wire.MAX_MAIL + 5):
        sender = make_identity(f"sender {n}")
        holder.judge.known.add(sender.public_key)  # (standing: past the strangers' half)
        raw = direct(sender, bob.identity).raw
        net.run(alice, [alice.machine.deposit(holder.key, bob.key, raw)])
    held = holder.store.mail_count()
    net.run(bob, bob.machine.collect([holder.key]))
    assert len(bob.taken) == held > wire.MAX_MAIL
    assert holder.store.mail_count() == 0


def test_deposits_in_flight_are_bounded_per_peer_and_forgotten_with_it(net: Net) -> None:
    alice, bob = net.add("alice"), net.add("bob")
    for n in range(MAX_UNACKED + 10):
        alice.machine.deposit(bob.key, bob.key, n.to_bytes(4) * 25)
    assert len(alice.machine.awaiting(bob.key)) == MAX_UNACKED
    alice.machine.forget(bob.key)
    assert alice.machine.awaiting(bob.key) == frozenset()


def test_holders_are_the_nodes_nearest_the_recipient_by_each_ones_view() -> None:
    recipient = make_identity("recipient").public_key
    target = int.from_bytes(records.node_id(recipient))
    ids = [os.urandom(20) for _ in range(40)]
    by_distance = sorted(ids, key=lambda i: int.from_bytes(i) ^ target)
    holders = [i for i in ids if is_holder(i, recipient, ids)]
    assert sorted(holders, key=lambda i: int.from_bytes(i) ^ target) == by_distance[:16]
    # A node that knows only a few others is a holder by its own view.
    assert is_holder(by_distance[-1], recipient, by_distance[-5:])
