"""Every exception meshnode raises, in one tree rooted at :class:`MeshError`.

Messages say what happened and what to try next; they never contain key
material or plaintext. Callers that only care whether meshnode failed catch
``MeshError``; the CLI maps the subclasses to exit codes.
"""

from __future__ import annotations


class MeshError(Exception):
    """Root of every error meshnode raises on purpose."""


class InvalidBulletin(MeshError):
    """Bytes that are not a valid, canonically encoded, correctly signed bulletin."""


class InvalidOperation(MeshError):
    """A channel membership operation that is malformed, unsigned or not allowed."""


class InvalidKey(MeshError):
    """A key's text form that does not parse (a typo, a truncation, the wrong kind)."""


class InvalidInvite(MeshError):
    """An invite code that is damaged, forged or not an invite."""


class InviteExpired(InvalidInvite):
    """An invite whose expiry has passed: ask the inviting group for a fresh one."""


class InviteUsed(InvalidInvite):
    """A one-time invite that another group has redeemed already."""


class InviteRevoked(InvalidInvite):
    """An invite that a member of the channel revoked."""


class KeyfileError(MeshError):
    """A keyfile that is missing, damaged or of an unknown version."""


class WrongPassphrase(KeyfileError):
    """The passphrase does not unlock the keyfile."""


class NotInitialised(MeshError):
    """The data directory holds no identity yet: run ``meshnode init``."""


class AlreadyInitialised(MeshError):
    """The data directory already holds an identity."""


class AuthenticationError(MeshError):
    """A MAC or signature did not verify: the data was altered or is not for this key."""


class NotARecipient(MeshError):
    """A direct bulletin that was not addressed to the identity trying to open it."""


class WrongChannel(MeshError):
    """A channel bulletin opened with a channel (or epoch) it does not belong to."""


class WrongEpoch(WrongChannel):
    """A channel bulletin from an epoch whose key this member does not hold."""


class InvalidRecord(MeshError):
    """A DHT record that fails validation (type, key, signature, expiry or size)."""


class StaleRecord(InvalidRecord):
    """A valid DHT record that brings nothing newer than the one already held."""


class StoreError(MeshError):
    """The local store could not do what was asked."""


class StorageFull(StoreError):
    """The disk holding the store is full: free space there; the node keeps serving
    what it holds and takes new data again once there is room."""


class ProtocolError(MeshError):
    """A protocol was violated. Abstract: raise one of the two subclasses."""


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol does not allow (a bug on our side)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow; the peer is at fault."""


class HandshakeError(RemoteProtocolError):
    """A Noise handshake failed: wrong network key, tampered message, or bad identity."""


class PeerDisconnected(MeshError):
    """The peer's session closed or broke."""


class InviterUnreachable(PeerDisconnected):
    """The node of the group that made an invite code did not answer: a one-time
    code is redeemed online at that node."""


class UnknownChannel(MeshError):
    """No channel of that name or id on this node: list them with ``meshnode channel list``."""


class AmbiguousChannel(MeshError):
    """A channel name (or id prefix) that fits several channels: name one by its id."""


class UnknownContact(MeshError):
    """No contact of that petname or key: add one with ``meshnode contact add``."""


class UnknownInvite(MeshError):
    """No invite of the channel has that id."""


class UnknownBulletin(MeshError):
    """No bulletin with that id in this node's store."""


class BulletinTooLarge(MeshError):
    """The text does not fit in one bulletin (64 KiB with its envelope)."""


class AlreadyRunning(MeshError):
    """Another daemon holds this data directory."""


class DaemonUnreachable(MeshError):
    """No daemon answers on the control socket: start one with ``meshnode daemon``."""


class OperationTimeout(MeshError):
    """An operation did not finish in time."""


class ConfigError(MeshError):
    """The configuration file has a mistake; the message names the key."""


class UsageError(MeshError):
    """The command line itself is wrong (the CLI exits 2)."""


class MalformedMessage(RemoteProtocolError):
    """A peer message that is not a well-formed, bounded, canonical wire message."""


class NonceExhausted(LocalProtocolError):
    """A Noise cipher state used its last nonce (2^64 - 2); open a new session to go on."""
