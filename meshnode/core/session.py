"""meshnode's session: the handshake and the record layer on top of the Noise engine.

Theory of operation (normative text: docs/spec/session.md); the Noise engine
itself is :mod:`meshnode.core.noise`. The session is three things in this order:
1. :class:`MeshHandshake`: ``Noise_XXpsk0_25519_ChaChaPoly_BLAKE2b``, prologue
   ``meshnode/v1/session``, the PSK being the mesh's network key and the
   static key the identity's X25519 key. Message 1 carries no payload; the
   payloads of messages 2 and 3 carry the sender's identity (see
   :func:`identity_payload`), which binds its Ed25519 key to the Noise
   static key. With psk0 a dialer without the network key fails at message 1,
   before the responder has revealed anything.
2. :class:`SessionMachine`: the byte-stream machine, h11 style
   (``receive_data``/``next_event``/``send``/``data_to_send``). Every Noise
   message on the stream is a *record*, ``uint16 big-endian length || noise
   message``. After the handshake a record's plaintext is ``type || body``:
   MESSAGE (the last fragment of a session message), FRAGMENT (a full
   fragment, more follow), KEEPALIVE, REKEY. Session messages up to
   ``max_message`` bytes are fragmented to fit Noise's 65535-byte limit.
3. Everything is bounded: a handshake record over MAX_HANDSHAKE_RECORD bytes
   is refused from its length prefix alone, a reassembled message over
   ``max_message`` is refused as soon as it would pass the limit, and the
   inbound buffer holds at most one record plus what the shell last fed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import TYPE_CHECKING, Final, TypeAlias

from meshnode.core import codec, crypto
from meshnode.core.noise import (
    MAX_NOISE_MESSAGE,
    PSKLEN,
    TAGLEN,
    CipherState,
    HandshakePhase,
    HandshakeState,
    KeyPair,
    NoiseProtocol,
)
from meshnode.errors import (
    AuthenticationError,
    HandshakeError,
    LocalProtocolError,
    NonceExhausted,
    RemoteProtocolError,
)

if TYPE_CHECKING:
    from meshnode.core.identity import Identity

PROTOCOL_NAME: Final = "Noise_XXpsk0_25519_ChaChaPoly_BLAKE2b"
PROLOGUE: Final = b"meshnode/v1/session"
OPEN_MESH_KEY: Final[bytes] = crypto.blake2b_256(b"meshnode/v1/open-mesh")
"""The published network key of the open mesh: BLAKE2b-256 of ``meshnode/v1/open-mesh``.

It is public on purpose (docs/spec/session.md gives its value): the open mesh
is open. A private mesh uses a secret 32-byte key of its own instead.
"""
IDENTITY_LABEL: Final = b"meshnode/v1/session/identity"
IDENTITY_VERSION: Final = 1
MAX_IDENTITY_PAYLOAD: Final = 128
"""The identity payload is 102 bytes; the bound leaves room and refuses anything bigger."""
MAX_HANDSHAKE_RECORD: Final = 512
"""No meshnode handshake message is longer (message 2 is 198 bytes), so a longer
length prefix ends an unauthenticated connection before its body is read."""

_PROTOCOL_XXPSK0: Final = NoiseProtocol.parse(PROTOCOL_NAME)


def _signed_identity(x25519_public: bytes, handshake_hash: bytes) -> bytes:
    return IDENTITY_LABEL + x25519_public + handshake_hash


def identity_payload(identity: Identity, handshake_hash: bytes) -> bytes:
    """The handshake payload that proves ``identity`` owns the Noise static key.

    ``[1, ed25519 public key, signature]`` in canonical msgpack, the signature
    by the Ed25519 key over ``IDENTITY_LABEL || X25519 static key || h``,
    where ``h`` is the handshake hash just before the message is written. The
    hash makes the signature good for this one session; the X25519 key in it
    binds the two keys, so nobody can present another group's Ed25519 key.
    """
    signature = identity.sign(_signed_identity(identity.x25519_public, handshake_hash))
    return codec.pack([IDENTITY_VERSION, identity.public_key, signature])


def verify_identity_payload(payload: bytes, remote_static: bytes, handshake_hash: bytes) -> bytes:
    """Check a peer's identity payload against its Noise static key; return its Ed25519 key.

    Raises:
        HandshakeError: malformed, another version, an Ed25519 key whose
            X25519 form is not the static key the peer proved in Noise, or a
            signature that does not verify.
    """
    try:
        doc = codec.unpack_canonical(
            payload, max_size=MAX_IDENTITY_PAYLOAD, max_str=0, max_bin=64, max_array=3
        )
    except codec.DecodeError:
        raise HandshakeError("the peer's identity payload is malformed") from None
    if not (isinstance(doc, list) and len(doc) == 3 and type(doc[0]) is int):
        raise HandshakeError("the peer's identity payload is malformed")
    version, key, signature = doc
    if version != IDENTITY_VERSION:
        raise HandshakeError(f"the peer speaks session version {version}; upgrade one of the two")
    if not (isinstance(key, bytes) and isinstance(signature, bytes)):
        raise HandshakeError("the peer's identity payload is malformed")
    try:
        if crypto.ed25519_pk_to_x25519(key) != remote_static:
            raise HandshakeError("the peer's Ed25519 key does not match its Noise static key")
        crypto.verify(key, _signed_identity(remote_static, handshake_hash), signature)
    except AuthenticationError:
        raise HandshakeError("the peer's identity signature does not verify") from None
    return key


@dataclass(frozen=True)
class SessionKeys:
    """What a finished meshnode handshake yields."""

    send: CipherState
    receive: CipherState
    peer_key: bytes
    """The peer's Ed25519 group key, proved by the handshake."""
    handshake_hash: bytes
    """The session id: unique to this session, the same on both ends."""


class MeshHandshake:
    """The three messages of the meshnode handshake (docs/spec/session.md, "Handshake").

    Steps (numbered as in the spec):
    1. Both sides: HandshakeState(PROTOCOL_NAME, prologue=PROLOGUE,
       psks=[network key], static=identity's X25519 key pair).
    2. Initiator writes message 1 with an empty payload (``psk, e``).
    3. Responder reads message 1; it must decrypt (else: wrong network key)
       and its payload must be empty. Then it writes message 2
       (``e, ee, s, es``) with its identity payload over ``h`` before message 2.
    4. Initiator reads message 2 and verifies the responder's identity
       payload, then writes message 3 (``s, se``) with its own identity
       payload over ``h`` before message 3.
    5. Responder reads message 3 and verifies the initiator's identity payload.
    6. Both sides split into transport cipher states; the session id is ``h``.
    """

    def __init__(
        self,
        identity: Identity,
        *,
        initiator: bool,
        rng: crypto.Rng,
        network_key: bytes = OPEN_MESH_KEY,
    ) -> None:
        if len(network_key) != PSKLEN:
            raise ValueError("a network key is 32 bytes")
        self._identity = identity
        self._peer_key: bytes | None = None
        # Step 1.
        self._state = HandshakeState(
            _PROTOCOL_XXPSK0,
            initiator=initiator,
            prologue=PROLOGUE,
            static=KeyPair(identity.x25519_secret, identity.x25519_public),
            psks=[network_key],
            rng=rng,
        )
        self._messages = 0

    @property
    def phase(self) -> HandshakePhase:
        """Whose turn it is, or whether the handshake finished or failed."""
        return self._state.phase

    def write_message(self) -> bytes:
        """The next message: message 1 (step 2), 2 (step 3) or 3 (step 4).

        Raises:
            LocalProtocolError: it is not our turn.
            HandshakeError: the handshake already failed.
        """
        payload = b""
        if self._messages > 0:
            payload = identity_payload(self._identity, self._state.handshake_hash)
        message = self._state.write_message(payload)
        self._messages += 1
        return message

    def read_message(self, message: bytes) -> None:
        """Read message 1 (step 3), 2 (step 4) or 3 (step 5).

        Raises:
            HandshakeError: wrong network key, an altered or truncated
                message, a payload in message 1, or an identity that does not
                bind to the Noise static key. The handshake is then in ERROR.
            LocalProtocolError: it is the peer's turn to read, not ours.
        """
        handshake_hash = self._state.handshake_hash
        payload = self._state.read_message(message)
        try:
            if self._messages == 0:
                if payload:
                    raise HandshakeError("message 1 must not carry a payload")
            else:
                remote_static = self._state.remote_static
                assert remote_static is not None  # the s token of XX precedes every payload
                self._peer_key = verify_identity_payload(payload, remote_static, handshake_hash)
        except HandshakeError:
            self._state.abort()
            raise
        self._messages += 1

    def result(self) -> SessionKeys:
        """Step 6: the transport cipher states, the peer's Ed25519 key and the session id.

        Raises:
            LocalProtocolError: the handshake has not finished.
        """
        send, receive = self._state.cipher_states()
        assert self._peer_key is not None  # both sides verified an identity to finish
        return SessionKeys(send, receive, self._peer_key, self._state.handshake_hash)


class RecordType(IntEnum):
    """The first plaintext byte of every record after the handshake."""

    MESSAGE = 0
    """The last (or only) fragment of a session message."""
    FRAGMENT = 1
    """A fragment of exactly MAX_FRAGMENT bytes; more of the same message follow."""
    KEEPALIVE = 2
    """No body: proves the peer is alive when it has nothing to say."""
    REKEY = 3
    """No body: the sender rekeys its sending key after this record; so must the receiver."""


LENGTH_SIZE: Final = 2
MAX_RECORD: Final = MAX_NOISE_MESSAGE
MAX_FRAGMENT: Final = MAX_RECORD - TAGLEN - 1
"""65518 bytes: a record's plaintext is the type byte and at most this much body."""


class NeedData(Enum):
    """The type of :data:`NEED_DATA`."""

    NEED_DATA = "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA
"""next_event's answer when a whole record has not arrived yet: feed receive_data."""


@dataclass(frozen=True)
class HandshakeComplete:
    """The handshake finished: the session is open and the peer proved ``peer_key``."""

    peer_key: bytes
    handshake_hash: bytes


@dataclass(frozen=True)
class MessageReceived:
    """A whole session message, reassembled from its fragments."""

    data: bytes


@dataclass(frozen=True)
class KeepaliveReceived:
    """The peer sent a keepalive: it is alive, and has nothing to say."""


Event: TypeAlias = HandshakeComplete | MessageReceived | KeepaliveReceived


class SessionState(Enum):
    """Where a SessionMachine stands."""

    HANDSHAKE = "handshaking"
    OPEN = "open"
    ERROR = "failed: discard the machine and close the connection"


@dataclass(frozen=True)
class SessionCounters:
    """What a session has carried, for ``Session.statistics()``."""

    bytes_sent: int
    bytes_received: int
    messages_sent: int
    messages_received: int
    keepalives_sent: int
    keepalives_received: int
    rekeys_sent: int
    rekeys_received: int


class SessionMachine:
    """A meshnode session on a byte stream: handshake, then framed, encrypted messages.

    The shell feeds whatever the stream gives to :meth:`receive_data`, calls
    :meth:`next_event` until it returns :data:`NEED_DATA` (reading more only
    then, which bounds the inbound buffer), and writes whatever
    :meth:`data_to_send` returns. An initiator's message 1 is queued at once.

    Args:
        identity: our group identity (its X25519 key is the Noise static key).
        initiator: whether we dialled.
        rng: randomness for the ephemeral key.
        max_message: the largest session message we send or accept.
        rekey_after: rekey our sending key after this many records.
        network_key: the mesh's 32-byte PSK.
    """

    def __init__(
        self,
        identity: Identity,
        *,
        initiator: bool,
        rng: crypto.Rng,
        max_message: int,
        rekey_after: int,
        network_key: bytes = OPEN_MESH_KEY,
    ) -> None:
        if max_message < 0 or rekey_after < 1:
            raise ValueError("max_message must be at least 0 and rekey_after at least 1")
        self._handshake: MeshHandshake | None = MeshHandshake(
            identity, initiator=initiator, rng=rng, network_key=network_key
        )
        self._keys: SessionKeys | None = None
        self._max_message = max_message
        self._rekey_after = rekey_after
        self._since_rekey = 0
        self._state = SessionState.HANDSHAKE
        self._inbound = bytearray()
        self._outbound = bytearray()
        self._partial = bytearray()
        self._counts = dict.fromkeys(SessionCounters.__dataclass_fields__, 0)
        if initiator:
            self._queue(self._handshake.write_message())

    @property
    def state(self) -> SessionState:
        """HANDSHAKE, OPEN or ERROR."""
        return self._state

    @property
    def keys(self) -> SessionKeys | None:
        """The peer's key, session id and cipher states once the handshake finished."""
        return self._keys

    def statistics(self) -> SessionCounters:
        """Bytes, messages, keepalives and rekeys so far, both ways."""
        return SessionCounters(**self._counts)

    def _queue(self, record: bytes) -> None:
        self._outbound += len(record).to_bytes(LENGTH_SIZE, "big") + record

    def data_to_send(self) -> bytes:
        """Drain the bytes to write to the stream (empty after a failure, always)."""
        out = bytes(self._outbound)
        self._outbound.clear()
        self._counts["bytes_sent"] += len(out)
        return out

    def receive_data(self, data: bytes) -> None:
        """Append bytes read from the stream; call next_event to process them."""
        if self._state is SessionState.ERROR:
            raise LocalProtocolError("the session failed: close its connection")
        self._inbound += data
        self._counts["bytes_received"] += len(data)

    def _fail(self) -> None:
        self._state = SessionState.ERROR
        self._handshake = None
        self._keys = None
        self._outbound.clear()
        self._inbound.clear()
        self._partial.clear()

    def _next_record(self) -> bytes | None:
        if len(self._inbound) < LENGTH_SIZE:
            return None
        size = int.from_bytes(self._inbound[:LENGTH_SIZE], "big")
        if self._state is SessionState.HANDSHAKE and size > MAX_HANDSHAKE_RECORD:
            raise HandshakeError(f"a handshake message longer than {MAX_HANDSHAKE_RECORD} bytes")
        if len(self._inbound) < LENGTH_SIZE + size:
            return None
        record = bytes(self._inbound[LENGTH_SIZE : LENGTH_SIZE + size])
        del self._inbound[: LENGTH_SIZE + size]
        return record

    def next_event(self) -> Event | NeedData:
        """Process buffered records until an event or :data:`NEED_DATA`.

        Raises:
            HandshakeError: the handshake failed (wrong network key, tampering,
                a bad identity); nothing was or will be queued after it.
            RemoteProtocolError: a record after the handshake failed to
                decrypt, has an unknown type or a malformed body, or a
                message passed ``max_message``.
            LocalProtocolError: the session already failed.
        """
        if self._state is SessionState.ERROR:
            raise LocalProtocolError("the session failed: close its connection")
        try:
            while (record := self._next_record()) is not None:
                event = (
                    self._handshake_record(record)
                    if self._state is SessionState.HANDSHAKE
                    else self._transport_record(record)
                )
                if event is not None:
                    return event
        except (RemoteProtocolError, NonceExhausted):
            self._fail()
            raise
        return NEED_DATA

    def _handshake_record(self, record: bytes) -> HandshakeComplete | None:
        handshake = self._handshake
        assert handshake is not None  # set until the handshake completes or fails
        handshake.read_message(record)
        if handshake.phase is HandshakePhase.WRITE:
            self._queue(handshake.write_message())
        if handshake.phase is not HandshakePhase.DONE:
            return None
        self._keys = handshake.result()
        self._handshake = None
        self._state = SessionState.OPEN
        return HandshakeComplete(self._keys.peer_key, self._keys.handshake_hash)

    def _transport_record(self, record: bytes) -> Event | None:
        """Framing steps 3-5 of docs/spec/session.md, "Records"."""
        keys = self._keys
        assert keys is not None  # set while OPEN
        try:
            plaintext = keys.receive.decrypt_with_ad(b"", record)
        except AuthenticationError:
            raise RemoteProtocolError("a session record did not decrypt: it was altered") from None
        if not plaintext:
            raise RemoteProtocolError("a session record without a type byte")
        kind, body = plaintext[0], plaintext[1:]
        if kind in (RecordType.KEEPALIVE, RecordType.REKEY) and body:
            raise RemoteProtocolError("a keepalive or rekey record with a body")
        if kind == RecordType.KEEPALIVE:
            self._counts["keepalives_received"] += 1
            return KeepaliveReceived()
        if kind == RecordType.REKEY:
            keys.receive.rekey()
            self._counts["rekeys_received"] += 1
            return None
        if kind not in (RecordType.MESSAGE, RecordType.FRAGMENT):
            raise RemoteProtocolError(f"a session record of unknown type {kind}")
        if kind == RecordType.FRAGMENT and len(body) != MAX_FRAGMENT:
            raise RemoteProtocolError("a fragment shorter than MAX_FRAGMENT")
        if len(self._partial) + len(body) > self._max_message:
            raise RemoteProtocolError(
                f"the peer sent a message over the {self._max_message}-byte limit"
            )
        self._partial += body
        if kind == RecordType.FRAGMENT:
            return None
        data = bytes(self._partial)
        self._partial.clear()
        self._counts["messages_received"] += 1
        return MessageReceived(data)

    def _seal(self, kind: RecordType, body: bytes | memoryview = b"") -> None:
        """Framing steps 1-2: encrypt one record, then rekey when ``rekey_after`` are out."""
        keys = self._keys
        assert keys is not None  # callers check OPEN
        self._queue(keys.send.encrypt_with_ad(b"", bytes([kind]) + bytes(body)))
        self._since_rekey += 1
        if self._since_rekey >= self._rekey_after:
            self._queue(keys.send.encrypt_with_ad(b"", bytes([RecordType.REKEY])))
            keys.send.rekey()
            self._since_rekey = 0
            self._counts["rekeys_sent"] += 1

    def _check_open(self) -> None:
        if self._state is not SessionState.OPEN:
            raise LocalProtocolError(f"cannot send: the session is {self._state.value}")

    def send(self, data: bytes) -> None:
        """Queue a session message: FRAGMENT records of MAX_FRAGMENT bytes, then one MESSAGE.

        Raises:
            LocalProtocolError: the session is not open, or ``data`` is over
                ``max_message`` (the peer would refuse it and close).
            NonceExhausted: 2^64-2 records went out; the session is failed.
        """
        self._check_open()
        if len(data) > self._max_message:
            raise LocalProtocolError(
                f"a session message is at most {self._max_message} bytes, not {len(data)}"
            )
        view = memoryview(data)
        try:
            while len(view) > MAX_FRAGMENT:
                self._seal(RecordType.FRAGMENT, view[:MAX_FRAGMENT])
                view = view[MAX_FRAGMENT:]
            self._seal(RecordType.MESSAGE, view)
        except NonceExhausted:
            self._fail()
            raise
        self._counts["messages_sent"] += 1

    def send_keepalive(self) -> None:
        """Queue a KEEPALIVE record, so the peer's idle timer sees we are alive."""
        self._check_open()
        try:
            self._seal(RecordType.KEEPALIVE)
        except NonceExhausted:
            self._fail()
            raise
        self._counts["keepalives_sent"] += 1
