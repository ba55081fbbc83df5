"""The public classes: the core's values with the system's clock, randomness and files.

The core (:mod:`meshnode.core`) takes the time and random bytes as arguments
so that it can be tested and simulated deterministically. These subclasses
supply ``time.time()`` and ``os.urandom`` and read and write keyfiles, which
is all an application needs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from meshnode.core import bulletin as _bulletin
from meshnode.core import channel as _channel
from meshnode.core import identity as _identity
from meshnode.errors import KeyfileError


def now() -> int:
    """The current Unix time in whole seconds, as bulletins and records carry it."""
    return int(time.time())


class Identity(_identity.Identity):
    """A group identity (see :class:`meshnode.core.identity.Identity`)."""

    @classmethod
    def generate(cls, name: str) -> Identity:
        """A new identity with a fresh random key."""
        return cls(name=name, seed=os.urandom(32))

    def save(
        self,
        path: str | os.PathLike[str],
        passphrase: str | None = None,
        *,
        opslimit: int = _identity.DEFAULT_OPSLIMIT,
        memlimit: int = _identity.DEFAULT_MEMLIMIT,
    ) -> None:
        """Write the keyfile with mode 0600, atomically (a crash leaves the old file).

        With a passphrase the key is sealed under Argon2id; the default cost takes
        about a second, so guessing passphrases is slow too.
        """
        data = self.to_keyfile(passphrase, rng=os.urandom, opslimit=opslimit, memlimit=memlimit)
        write_private_file(Path(path), data)

    @classmethod
    def load(cls, path: str | os.PathLike[str], passphrase: str | None = None) -> Identity:
        """Read a keyfile, raising KeyfileError or WrongPassphrase with a clear message."""
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            raise KeyfileError(f"no keyfile at {path}") from None
        except OSError as exc:
            raise KeyfileError(f"cannot read the keyfile {path}: {exc.strerror}") from None
        identity = cls.from_keyfile(data, passphrase)
        assert isinstance(identity, cls)
        return identity


class Channel(_channel.Channel):
    """A channel (see :class:`meshnode.core.channel.Channel`)."""

    @classmethod
    def create(cls, name: str) -> Channel:
        """A new channel with a fresh random secret; its creator is its first member."""
        return cls.from_secret(name, os.urandom(32))

    def invite(
        self, by: _identity.Identity, expires: int | None = None, bootstrap: Sequence[str] = ()
    ) -> str:
        """A signed invite code; ``expires`` is a lifetime in seconds (None: no expiry)."""
        t = now()
        return self.make_invite(
            by, now=t, expires_at=None if expires is None else t + expires, bootstrap=bootstrap
        )

    @classmethod
    def from_invite(cls, code: str) -> Channel:
        """The channel an invite admits to (raises InvalidInvite or InviteExpired)."""
        channel = cls.parse_invite(code, now=now()).channel
        assert isinstance(channel, cls)
        return channel

    def rekey(self) -> Channel:
        """This channel with a fresh epoch (send its key update to the remaining members)."""
        channel = self.next_epoch(os.urandom)
        assert isinstance(channel, Channel)
        return channel


class Bulletin(_bulletin.Bulletin):
    """A signed bulletin (see :class:`meshnode.core.bulletin.Bulletin`)."""

    __slots__ = ()

    @classmethod
    def create(
        cls,
        author: _identity.Identity,
        audience: _bulletin.Audience,
        text: str,
        *,
        seq: int,
        prev: bytes | None = None,
        expires: int | None = None,
        reply_to: bytes | None = None,
        content_type: str = _bulletin.TEXT_PLAIN,
    ) -> Bulletin:
        """Sign (and encrypt for ``audience``) a text bulletin created now.

        ``audience`` is a Channel, a list of recipient group keys (direct), or
        None (public). ``expires`` is a lifetime in seconds.
        """
        t = now()
        b = cls.seal(
            author,
            audience,
            text.encode("utf-8"),
            seq=seq,
            prev=prev,
            now=t,
            rng=os.urandom,
            content_type=content_type,
            expires_at=None if expires is None else t + expires,
            reply_to=reply_to,
        )
        assert isinstance(b, cls)
        return b


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by its owner alone, durably and atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
