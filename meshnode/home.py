"""A node's data directory: where its identity, store and configuration live.

Layout (all files readable by their owner alone):

    <data dir>/identity.key     the group's keyfile (docs/spec/identity.md)
    <data dir>/meshnode.db      the SQLite store
    <data dir>/meshnode.toml    configuration (written by ``meshnode init``)

The data directory is ``--data-dir``, else ``$MESHNODE_HOME``, else
``$XDG_DATA_HOME/meshnode``, else ``~/.local/share/meshnode``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from meshnode.api import load_identity, now, save_identity
from meshnode.core.identity import DEFAULT_MEMLIMIT, DEFAULT_OPSLIMIT, Identity
from meshnode.errors import AlreadyInitialised, KeyfileError, NotInitialised
from meshnode.paths import CONFIG, KEYFILE, STORE, resolve_data_dir
from meshnode.store import DEFAULT_AUTHOR_QUOTA, Budget, Store

if TYPE_CHECKING:
    import os
    from pathlib import Path


@dataclass(frozen=True)
class DataDir:
    """The files of one node, by their fixed names under ``path``."""

    path: Path

    @classmethod
    def resolve(cls, explicit: str | os.PathLike[str] | None = None) -> DataDir:
        """The data directory named by ``explicit`` or, failing that, the default one."""
        return cls(resolve_data_dir(explicit))

    @property
    def keyfile(self) -> Path:
        return self.path / KEYFILE

    @property
    def store_path(self) -> Path:
        return self.path / STORE

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    def is_initialised(self) -> bool:
        """Whether an identity exists here."""
        return self.keyfile.exists()

    def needs_passphrase(self) -> bool:
        """Whether the keyfile is sealed, so callers know to ask for a passphrase."""
        try:
            data = self.keyfile.read_bytes()
        except FileNotFoundError:
            raise self._not_initialised() from None
        return Identity.keyfile_is_sealed(data)

    def initialise(
        self,
        name: str,
        passphrase: str | None = None,
        *,
        opslimit: int = DEFAULT_OPSLIMIT,
        memlimit: int = DEFAULT_MEMLIMIT,
    ) -> Identity:
        """Create the identity and the store; refuses to replace an existing identity."""
        if self.is_initialised():
            raise AlreadyInitialised(f"{self.path} already holds an identity")
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        identity = Identity.generate(name)
        save_identity(identity, self.keyfile, passphrase, opslimit=opslimit, memlimit=memlimit)
        with self.open_store(identity) as store:
            store.set_meta("name", identity.name.encode())
            store.set_meta("public_key", identity.public_key)
            store.set_meta("created_at", str(now()).encode())
        return identity

    def load_identity(self, passphrase: str | None = None) -> Identity:
        """The node's identity (raises NotInitialised, WrongPassphrase, KeyfileError)."""
        if not self.is_initialised():
            raise self._not_initialised()
        return load_identity(self.keyfile, passphrase)

    def open_store(
        self,
        identity: Identity,
        *,
        author_quota: int = DEFAULT_AUTHOR_QUOTA,
        budget: Budget | None = None,
    ) -> Store:
        """The node's store, its secrets sealed under the identity's key."""
        try:
            return Store.open(
                self.store_path,
                seal_key=identity.store_seal_key(),
                owner=identity.public_key,
                author_quota=author_quota,
                budget=budget,
            )
        except OSError as exc:
            raise KeyfileError(f"cannot open the store in {self.path}: {exc.strerror}") from None

    def _not_initialised(self) -> NotInitialised:
        return NotInitialised(
            f"no meshnode identity in {self.path}: create one with 'meshnode init'"
        )
