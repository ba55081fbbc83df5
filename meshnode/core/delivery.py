"""Direct delivery as a machine: deposits, their acks, mail held for others, holder
choice and the retry schedule (normative text: docs/spec/gossip.md, "Direct
delivery").

Theory of operation:
1. Direct bulletins (and key updates) are not gossiped. Their sender deposits
   them with the recipient's own node when it answers, else with up to
   :data:`MAX_HOLDERS` *holders*: the nodes whose DHT ids are nearest the
   recipient's. The machine says what to send; the node finds and dials the
   nodes (I/O) and tells the machine who answered.
2. Like the archive behind gossip, a :class:`Mailbox` (the store) keeps what
   must survive a restart: mail held for others with its bounds, and the
   outbox of our own deliveries. The machine keeps only what is in flight:
   deposits awaiting an ack, at most :data:`MAX_UNACKED` per peer and
   forgotten with the peer.
3. Who may send what: a deposit made out to this node is kept only if it
   holds a key slot for us; one made out to another group only if this node is
   one of that group's holders by its own view (:meth:`Judge.holds_for`), else
   it is refused and costs the depositor :attr:`Offence.MISDIRECTED`. Anything
   but a valid direct bulletin costs its carrier
   :attr:`Offence.INVALID_BULLETIN`. A holder hands mail only to the
   session's own peer (Noise proves the key), and forgets it only on that
   peer's MAIL_ACK.
4. Acks are honest about the store: what could not be written (a full disk)
   raises out of :meth:`Delivery.receive` before any ack is sent, so the
   sender keeps it and tries again; that costs the sender nothing.

The machine does no I/O and reads no clock: times come in as arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol, TypeAlias

from meshnode.core import crypto, records, wire
from meshnode.core.bulletin import Bulletin, Kind
from meshnode.core.gossip import Offence
from meshnode.errors import InvalidBulletin, MeshError, NotARecipient

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from meshnode.core.identity import Identity

MAX_HOLDERS: Final = 8
"""Holders a sender deposits with, for a recipient that does not answer."""
HOLDER_SLACK: Final = 2
"""A node keeps mail for a group while it is among ``HOLDER_SLACK * MAX_HOLDERS`` of
the node IDs nearest the group's that it knows: views of the DHT differ, and a
sender that sees another nearest eight is not refused, nor charged, for it."""
MAX_UNACKED: Final = 256
"""Deposits to one peer awaiting its DEPOSIT_ACK; the oldest is forgotten first."""
DIRECT_KINDS: Final = frozenset({Kind.DIRECT, Kind.KEY_UPDATE})


class Mailbox(Protocol):
    """What delivery keeps durably: :class:`meshnode.store.Store` implements it."""

    def hold_mail(self, recipient: bytes, bulletin: Bulletin, *, now: int, standing: bool) -> bool:
        """Keep a bulletin for an offline recipient, within the mail bounds."""

    def mail_for(self, recipient: bytes, *, now: int, limit: int) -> tuple[list[bytes], bool]:
        """Up to ``limit`` held bulletins for ``recipient``, and whether there are more."""

    def forget_mail(self, recipient: bytes, ids: Sequence[bytes]) -> None:
        """The recipient has these."""

    def delivered(self, bulletin_id: bytes, recipient: bytes) -> None:
        """The recipient's own node acknowledged our bulletin."""

    def held_by_one_more(self, bulletin_id: bytes, recipient: bytes) -> None:
        """A holder acknowledged keeping our bulletin for the recipient."""

    def pending_deliveries(self, *, now: int) -> list[tuple[bytes, bytes, int]]:
        """(bulletin id, recipient, holders so far) of ours not yet delivered."""


class Judge(Protocol):
    """What only the node can tell: who it knows, and where it sits in the DHT."""

    def standing(self, author: bytes, recipient: bytes) -> bool:
        """Whether mail from ``author`` to ``recipient`` may use the half of the mail
        bounds that throw-away keys cannot reach."""

    def holds_for(self, recipient: bytes) -> bool:
        """Whether this node is one of ``recipient``'s holders (:func:`is_holder`)."""

    def blocked(self, key: bytes) -> bool:
        """Whether ``key`` is a blocked contact."""


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``message`` to ``peer`` over its session."""

    peer: bytes
    message: wire.DeliveryMessage


@dataclass(frozen=True, slots=True)
class Charge:
    """``peer`` misbehaved: the node charges it (gossip's score)."""

    peer: bytes
    offence: Offence


@dataclass(frozen=True, slots=True)
class Take:
    """A direct bulletin (or key update) for this group: the node stores it."""

    bulletin: Bulletin


@dataclass(frozen=True, slots=True)
class Attempt:
    """One of our direct bulletins to deliver now: deposit it with the recipient's
    node if it answers, else with up to ``holders`` more holders."""

    bulletin_id: bytes
    recipient: bytes
    holders: int


Action: TypeAlias = Send | Charge | Take


def is_holder(own: bytes, recipient: bytes, known: Iterable[bytes]) -> bool:
    """Whether the node whose DHT id is ``own`` holds mail for ``recipient`` (a group
    key), given the node IDs it knows (its routing table)."""
    target = records.node_id(recipient)
    return records.among_nearest(own, target, known, HOLDER_SLACK * MAX_HOLDERS)


class Delivery:
    """One node's direct delivery. Feed it the delivery messages its sessions
    receive (:meth:`receive`); it answers with :data:`Action` values to carry out."""

    def __init__(self, identity: Identity, mailbox: Mailbox, judge: Judge) -> None:
        self._identity = identity
        self._mailbox = mailbox
        self._judge = judge
        self._unacked: dict[bytes, dict[bytes, bytes]] = {}
        """Peer -> {bulletin id: recipient} of deposits awaiting its ack, oldest first."""

    def deposit(self, peer: bytes, recipient: bytes, raw: bytes) -> Send:
        """Deposit a bulletin of ours for ``recipient`` with ``peer`` (its own node, or a
        holder); the ack is matched when it comes."""
        unacked = self._unacked.setdefault(peer, {})
        unacked[crypto.blake2b_256(raw)] = recipient
        while len(unacked) > MAX_UNACKED:
            del unacked[next(iter(unacked))]
        return Send(peer, wire.Deposit(recipient=recipient, raws=(raw,)))

    def collect(self, peers: Iterable[bytes]) -> list[Send]:
        """Ask each peer for the mail it holds for us."""
        return [Send(p, wire.MailRequest(limit=wire.MAX_MAIL)) for p in peers]

    def due(self, *, now: int) -> list[Attempt]:
        """Our bulletins still to deliver, each with how many more holders it needs."""
        return [
            Attempt(bid, recipient, MAX_HOLDERS - holders)
            for bid, recipient, holders in self._mailbox.pending_deliveries(now=now)
        ]

    def awaiting(self, peer: bytes) -> frozenset[bytes]:
        """Ids of the bulletins deposited with ``peer`` whose ack has not come."""
        return frozenset(self._unacked.get(peer, ()))

    def forget(self, peer: bytes) -> None:
        """``peer``'s session ended: its acks will not come (the outbox retries)."""
        self._unacked.pop(peer, None)

    def receive(self, peer: bytes, message: wire.DeliveryMessage, *, now: int) -> list[Action]:
        """What to do about a delivery message from ``peer`` (REDEEM and REDEEMED are
        the node's, for invites: this returns nothing for them).

        Raises:
            StoreError: the mailbox could not write; nothing was acknowledged.
        """
        match message:
            case wire.Deposit():
                return self._on_deposit(peer, message, now)
            case wire.DepositAck():
                self._on_ack(peer, message)
                return []
            case wire.MailRequest():
                raws, more = self._mailbox.mail_for(peer, now=now, limit=message.limit)
                return [Send(peer, wire.Mail(raws=tuple(raws), more=more))]
            case wire.Mail():
                return self._on_mail(peer, message)
            case wire.MailAck():
                self._mailbox.forget_mail(peer, message.ids)
                return []
        return []

    def _on_deposit(self, peer: bytes, message: wire.Deposit, now: int) -> list[Action]:
        actions: list[Action] = []
        stored: list[wire.BulletinId] = []
        refused: list[wire.BulletinId] = []
        for b in self._direct(peer, message.raws, actions):
            verdict = self._keep(peer, message.recipient, b, now, actions)
            (stored if verdict else refused).append(wire.BulletinId(b.id))
        actions.append(Send(peer, wire.DepositAck(stored=tuple(stored), refused=tuple(refused))))
        return actions

    def _keep(
        self, peer: bytes, recipient: bytes, b: Bulletin, now: int, actions: list[Action]
    ) -> bool:
        if b.expired(now):
            return False
        if recipient == self._identity.public_key:
            if not self._for_us(b):
                return False  # (deposited for us, but it holds no slot for us)
            actions.append(Take(b))
            return True
        if not self._judge.holds_for(recipient):
            actions.append(Charge(peer, Offence.MISDIRECTED))
            return False
        if self._judge.blocked(peer) or self._judge.blocked(b.author):
            return False
        standing = self._judge.standing(b.author, recipient)
        return self._mailbox.hold_mail(recipient, b, now=now, standing=standing)

    def _on_ack(self, peer: bytes, message: wire.DepositAck) -> None:
        unacked = self._unacked.get(peer, {})
        for bid in message.refused:
            unacked.pop(bid, None)
        for bid in message.stored:
            recipient = unacked.pop(bid, None)
            if recipient is None:
                continue
            if recipient == peer:
                self._mailbox.delivered(bid, recipient)
            else:
                self._mailbox.held_by_one_more(bid, recipient)

    def _on_mail(self, peer: bytes, message: wire.Mail) -> list[Action]:
        actions: list[Action] = []
        ids = []
        for b in self._direct(peer, message.raws, actions):
            if self._for_us(b):  # (the holder took the depositor's word for it)
                actions.append(Take(b))
            ids.append(wire.BulletinId(b.id))
        if ids:
            actions.append(Send(peer, wire.MailAck(ids=tuple(ids))))
        if message.more:
            actions.append(Send(peer, wire.MailRequest(limit=wire.MAX_MAIL)))
        return actions

    def _direct(self, peer: bytes, raws: Sequence[bytes], actions: list[Action]) -> list[Bulletin]:
        """The valid direct bulletins (and key updates) among ``raws``; anything else
        costs ``peer``: direct delivery carries nothing but these. ``peer`` answers
        only for what it can check, the signed envelope: a box that does not open for
        us is its author's doing, never the carrier's."""
        found = []
        for raw in raws:
            try:
                b = Bulletin.from_bytes(raw)
            except InvalidBulletin:
                b = None
            if b is None or b.kind not in DIRECT_KINDS:
                actions.append(Charge(peer, Offence.INVALID_BULLETIN))
                continue
            found.append(b)
        return found

    def _for_us(self, b: Bulletin) -> bool:
        """Whether a direct bulletin holds a key slot for this group: only then is it
        ours to keep (one whose slot opens but whose box does not is kept, and counted
        unreadable, to its author's blame)."""
        try:
            b.open(self._identity)
        except NotARecipient:
            return False
        except MeshError:
            return True
        return True
