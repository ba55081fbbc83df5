"""The time, randomness and keyfiles the public classes' conveniences draw on, injected from above.

Rules:
1. The core reads no clock, draws no randomness and opens no file. Its codecs and
   machines take ``now`` and ``rng`` as arguments (``Bulletin.seal``,
   ``Channel.make_invite``, ``Identity.from_seed``, ...), which is what deterministic
   tests and simulations call.
2. The conveniences on the public classes (``Identity.generate``, ``Channel.create``,
   ``Channel.invite``, ``Channel.from_invite``, ``Channel.rekey``, ``Bulletin.create``)
   call those same functions with what :func:`current` provides. They are the classes
   ``meshnode`` exports and the node, store and client hand back, so there is one type
   per concept.
3. The providers come from above: importing :mod:`meshnode` installs the system's
   (:data:`meshnode.api.SYSTEM`: ``time.time``, ``os.urandom``, mode-0600 keyfiles)
   before any core module runs, so the core imports none of them.
4. :func:`installed` swaps them for the length of a ``with`` block (a fixed clock in a
   test). The swap is process-wide: it is for tests, not for concurrent use.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol, TypeAlias

from meshnode.errors import MeshError

if TYPE_CHECKING:
    from collections.abc import Iterator


class PathLike(Protocol):
    """A file system path object (``os.PathLike[str]``, named here without ``os``)."""

    def __fspath__(self) -> str: ...


StrPath: TypeAlias = str | PathLike


class Providers(Protocol):
    """What the conveniences ask of the world."""

    def now(self) -> int:
        """The Unix time in whole seconds, as bulletins and invites carry it."""
        ...

    def random(self, size: int) -> bytes:
        """``size`` bytes from a cryptographically secure source."""
        ...

    def read_keyfile(self, path: StrPath) -> bytes:
        """The bytes of a keyfile, or KeyfileError saying why not.

        Serves the deprecated ``Identity.load`` until 0.3.0 (then it goes)."""
        ...

    def write_keyfile(self, path: StrPath, data: bytes) -> None:
        """Write a keyfile readable by its owner alone, atomically.

        Serves the deprecated ``Identity.save`` until 0.3.0 (then it goes)."""
        ...


_current: Providers | None = None


def install(providers: Providers) -> None:
    """Make ``providers`` the ones every convenience uses (``meshnode`` does it on import)."""
    global _current
    _current = providers


def current() -> Providers:
    """The installed providers.

    Raises:
        MeshError: none are installed, which happens only if something uninstalled
            the system's that ``import meshnode`` puts in place.
    """
    if _current is None:
        raise MeshError(
            "no clock or random source installed: import meshnode, or pass now and rng "
            "to the core functions (Bulletin.seal, Channel.make_invite, ...)"
        )
    return _current


@contextmanager
def installed(providers: Providers) -> Iterator[Providers]:
    """Use ``providers`` inside the ``with`` block, then the previous ones again."""
    global _current
    previous = _current
    _current = providers
    try:
        yield providers
    finally:
        _current = previous
