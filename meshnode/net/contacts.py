"""Contacts: the groups this one has named, verified or blocked.

Theory of operation:
1. A contact is a known group: its bulletins rank as known in the store's
   budget, so eviction spares them (see ``net/intake.py``); naming one ranks
   the bulletins already held again.
2. Blocking a contact closes its session; a blocked group gets no new one (see
   ``net/peers.py``) and no mail is kept from it or for it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from meshnode.core import views
from meshnode.core.identity import parse_key
from meshnode.errors import UnknownContact

if TYPE_CHECKING:
    from meshnode.net.context import Context
    from meshnode.net.intake import Intake
    from meshnode.net.peers import Peers
    from meshnode.store import Contact


class Contacts:
    """The group's address book, as the node API shows it."""

    def __init__(self, ctx: Context, peers: Peers, intake: Intake) -> None:
        self._ctx = ctx
        self._peers = peers
        self._intake = intake

    def infos(self) -> list[views.ContactInfo]:
        return [_contact_info(c) for c in self._ctx.archive.store.contacts()]

    def add(self, petname: str, key: str | bytes) -> views.ContactInfo:
        raw = key if isinstance(key, bytes) else parse_key(key)
        contact = self._ctx.archive.store.add_contact(petname, raw, now=int(time.time()))
        self._intake.know_again()
        return _contact_info(contact)

    def verify(self, petname: str) -> views.ContactInfo:
        return self._update(petname, verified=True)

    def block(self, petname: str) -> views.ContactInfo:
        info = self._update(petname, blocked=True)
        self._ctx.nursery.start_soon(self._peers.close, info.key)
        return info

    def _update(self, petname: str, **change: bool) -> views.ContactInfo:
        store = self._ctx.archive.store
        contact = store.contact_by_name(petname)
        if contact is None:
            raise UnknownContact(f"no contact {petname!r} (see 'meshnode contact list')")
        updated = store.update_contact(contact.key, **change)
        assert updated is not None
        self._intake.forget_known()
        return _contact_info(updated)


def _contact_info(c: Contact) -> views.ContactInfo:
    return views.ContactInfo(key=c.key, petname=c.petname, verified=c.verified, blocked=c.blocked)
