"""Membership hellos: the proofs a node presents, and which topics it shares with a peer.

Rules (normative text: docs/spec/gossip.md, "Topics and membership proofs"):
- For every member key it holds, a node puts in its HELLO the proof
  ``derive(member key, label || session id || its own key, 16)``: worthless in
  any other session, and useless to echo back (the receiver expects proofs
  made with the *sender's* key).
- Proofs are shuffled and padded with random values to a multiple of
  ``hello_padding``, so the HELLO tells a peer roughly how many keys we hold
  and nothing else; at most MAX_PROOFS - hello_padding keys in all.
- A channel is shared with a peer when one of its proofs is one we expect
  from it; the public topic when both take part in it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from meshnode.core import crypto, wire
from meshnode.core.wire import PUBLIC_TOPIC, PeerId, Topic
from meshnode.errors import LocalProtocolError

if TYPE_CHECKING:
    from meshnode.core.channel import Channel

__all__ = ["channel_keys", "check_keys", "expected_proofs", "hello", "shared_topics"]

Keys = Mapping[Topic, Sequence[bytes]]
"""The subscribed topics, each with the member keys presented for it."""


def channel_keys(channel: Channel, *, epochs: int = 1) -> tuple[bytes, ...]:
    """The member keys to present for ``channel``: its newest ``epochs`` epoch
    numbers, every sibling of each (so siblings do not split the topic).

    Presenting the previous epoch too for a while after a rekey keeps members
    who have not received the new key connected; a member removed by the
    rekey holds only old epochs, so once the old one is dropped it no longer
    matches.
    """
    numbers = sorted({k.number for k in channel.keys}, reverse=True)[: max(1, epochs)]
    newest = [k for k in reversed(channel.keys) if k.number in numbers]
    return tuple(wire.member_key(k.secret) for k in newest)


def check_keys(subscribed: Keys, topic: Topic, keys: Sequence[bytes], padding: int) -> None:
    """Refuse to subscribe ``topic`` with ``keys`` when a HELLO could not present them.

    Raises:
        LocalProtocolError: keys for the public topic, none for a channel, or
            more keys in all than a padded HELLO holds.
    """
    if (topic == PUBLIC_TOPIC) == bool(keys) or len(topic) != wire.ID_SIZE:
        raise LocalProtocolError("a channel topic needs member keys; the public one takes none")
    total = sum(len(k) for name, k in subscribed.items() if name != topic) + len(keys)
    limit = wire.MAX_PROOFS - padding
    if total > limit:
        raise LocalProtocolError(f"at most {limit} member keys in all")


def hello(
    subscribed: Keys,
    session_id: bytes,
    local: PeerId,
    *,
    padding: int,
    rng: crypto.Rng,
    shuffle: Callable[[list[bytes]], None],
) -> wire.Hello:
    """Our HELLO for the session ``session_id``."""
    proofs = [
        wire.membership_proof(key, session_id, local)
        for keys in subscribed.values()
        for key in keys
    ]
    proofs.extend(rng(wire.PROOF_SIZE) for _ in range(-len(proofs) % padding))
    shuffle(proofs)
    return wire.Hello(public=PUBLIC_TOPIC in subscribed, proofs=tuple(proofs))


def expected_proofs(subscribed: Keys, session_id: bytes, peer: PeerId) -> dict[bytes, Topic]:
    """The proof ``peer`` would show for each of our member keys, and that key's topic."""
    return {
        wire.membership_proof(key, session_id, peer): topic
        for topic, keys in subscribed.items()
        for key in keys
    }


def shared_topics(
    expected: Mapping[bytes, Topic], proofs: frozenset[bytes], *, public: bool
) -> dict[Topic, None]:
    """The topics shared with a peer that showed ``proofs``: the public one first if
    ``public`` (both take part in it), then channels in the order of ``expected``."""
    shared: dict[Topic, None] = {}
    if public:
        shared[PUBLIC_TOPIC] = None
    for proof, topic in expected.items():
        if proof in proofs:
            shared[topic] = None
    return shared
