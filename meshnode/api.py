"""The system's side of the public API: the clock, randomness and keyfiles.

The public classes (``meshnode.Identity``, ``Channel``, ``Bulletin``) are the
core's own: the node, the store and the client hand back exactly those. The
core reads no clock, draws no randomness and touches no file; its conveniences
(``Identity.generate``, ``Channel.invite``, ``Bulletin.create``, ...) ask the
providers of :mod:`meshnode.core.providers`, and :data:`SYSTEM`, installed when
``meshnode`` is imported, supplies ``time.time()`` and ``os.urandom``.

Keyfiles are files, so they are functions here: :func:`save_identity` and
:func:`load_identity` (``Identity.save`` and ``Identity.load`` are deprecated).

This module stays light to import (no libsodium): ``meshnode post`` starts fast.
"""

from __future__ import annotations

import importlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshnode.core._deprecate import warn_deprecated
from meshnode.errors import KeyfileError

if TYPE_CHECKING:
    from meshnode.core.identity import Identity
    from meshnode.core.providers import StrPath


def now() -> int:
    """The current Unix time in whole seconds, as bulletins and records carry it."""
    return int(time.time())


def save_identity(
    identity: Identity,
    path: StrPath,
    passphrase: str | None = None,
    *,
    opslimit: int | None = None,
    memlimit: int | None = None,
) -> None:
    """Write ``identity``'s keyfile with mode 0600, atomically (a crash leaves the old file).

    Args:
        identity: the group's identity; its seed is the whole secret.
        path: the keyfile to write (replaced if it exists).
        passphrase: seals the key under Argon2id; None writes it unsealed.
        opslimit, memlimit: the Argon2id cost; the default takes about a second, so
            guessing passphrases is slow too (tests pass cheaper ones).
    """
    from meshnode.core import identity as core_identity  # loaded already: identity is one

    data = identity.to_keyfile(
        passphrase,
        rng=os.urandom,
        opslimit=core_identity.DEFAULT_OPSLIMIT if opslimit is None else opslimit,
        memlimit=core_identity.DEFAULT_MEMLIMIT if memlimit is None else memlimit,
    )
    write_private_file(Path(path), data)


def load_identity(path: StrPath, passphrase: str | None = None) -> Identity:
    """The identity in a keyfile.

    Raises:
        KeyfileError: no keyfile there, unreadable, damaged or of an unknown version.
        WrongPassphrase: the keyfile is sealed and ``passphrase`` is missing or wrong.
    """
    # Imported here so that importing meshnode does not load libsodium.
    from meshnode.core.identity import Identity

    return Identity.from_keyfile(read_keyfile(path), passphrase)


def read_keyfile(path: StrPath) -> bytes:
    """The bytes of a keyfile, or a KeyfileError that names the path and the reason."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise KeyfileError(f"no keyfile at {os.fspath(path)}") from None
    except OSError as exc:
        raise KeyfileError(
            f"cannot read the keyfile {os.fspath(path)}: {exc.strerror}"
        ) from None


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


class SystemProviders:
    """The system's clock, random source and files (:class:`meshnode.core.providers.Providers`).

    Subclass it to change one of them, such as a fixed clock in a test, and install
    the instance with :func:`meshnode.core.providers.installed`.
    """

    def now(self) -> int:
        return now()

    def random(self, size: int) -> bytes:
        return os.urandom(size)

    def read_keyfile(self, path: StrPath) -> bytes:
        return read_keyfile(path)

    def write_keyfile(self, path: StrPath, data: bytes) -> None:
        write_private_file(Path(path), data)


SYSTEM = SystemProviders()
"""The providers ``import meshnode`` installs."""

_MOVED = {"Identity": "identity", "Channel": "channel", "Bulletin": "bulletin"}


def __getattr__(name: str) -> Any:
    """``meshnode.api.Identity`` and its siblings, deprecated: they are ``meshnode``'s."""
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module 'meshnode.api' has no attribute {name!r}")
    warn_deprecated(f"meshnode.api.{name}", instead=f"meshnode.{name}")
    return getattr(importlib.import_module(f"meshnode.core.{module}"), name)
