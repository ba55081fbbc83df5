"""The DHT: the stock ``kademlia`` Server, hardened, on an asyncio loop bridged to trio.

This package is the only code that imports asyncio, kademlia, rpcudp or
trio-asyncio (``tests/unit/test_layers.py``). Normative text: ``docs/spec/dht.md``.

Modules:
- :mod:`.config`: :class:`DHTConfig`, the counters and :class:`DHTStatistics`.
- :mod:`.datagrams`: rpcudp's framing, the private-mesh seal, checked node entries.
- :mod:`.storage`: the records held, validated, under quotas, persisted
  through a :class:`RecordStore`.
- :mod:`.protocol`: kademlia's protocol, crawl and server, hardened.
- :mod:`.hosts`: where the asyncio loop runs: a thread of its own (the default,
  :func:`open_dht_thread`) or trio-asyncio, and how the two sides talk.
- :mod:`.host`: :func:`open_dht` and :class:`DHTNode`, the trio side.

Theory of operation:
1. Routing, lookups and replication are kademlia 2.2.3's (``Server``,
   ``KademliaProtocol``, the spider crawls), so on the open mesh we speak the
   stock rpcudp wire format and stock nodes interoperate with us.
2. Everything that touches the network is replaced, because rpcudp trusts
   every datagram: :class:`_HardenedProtocol` decodes each datagram inside one
   guard, bounded (:mod:`meshnode.core.codec`), after a per-source rate limit
   and, on a private mesh, after opening its seal. Whatever is wrong is counted
   by reason (:meth:`DHTNode.statistics`) and ignored; no exception can reach
   the asyncio loop, where trio-asyncio would re-raise it out of ``open_loop``
   and take the node down (and a thread's loop would only log it).
3. Requests are answered synchronously in the datagram callback, so a flood
   creates no tasks. Our own requests live in a bounded table; each entry is
   removed by a done-callback whether it is answered, timed out or cancelled
   from trio, and its timer is cancelled with it (rpcudp's timer would call
   ``set_result`` on a cancelled future: ``InvalidStateError``).
4. Every value is a signed record (:mod:`meshnode.core.records`) and is checked
   on every path: STORE requests, FIND_VALUE replies and our own publishes.
   Storage charges each record to the source that wrote it (quota per source,
   a total cap) and persists through a :class:`RecordStore`.
5. Lookups do not take kademlia's most common value: they continue until
   ``value_quorum`` nodes answered with a valid record and combine the answers
   (highest ``seq``; the union of rendezvous entries).
6. Timers (refresh, republish, saving the routing table) are trio tasks with
   intervals from :class:`DHTConfig`; the routing table is saved as plain data,
   never with kademlia's own ``save_state``, whose format can run code when loaded.
7. Nothing here runs per bulletin: the node layer uses the DHT to find peers,
   then talks to them over sessions. The asyncio loop runs in a thread of its
   own: under trio-asyncio every asyncio callback also paid a trio scheduling
   round, which took lookups to twice plain asyncio's time (``bench/dht.py``).
"""

from meshnode.net.dht.config import DHTConfig, DHTStatistics
from meshnode.net.dht.datagrams import HEADER_SIZE, MAX_DATAGRAM, REQUEST, RESPONSE
from meshnode.net.dht.host import DHTNode, estimate_size, open_dht
from meshnode.net.dht.hosts import DEFAULT_HOST, open_dht_thread
from meshnode.net.dht.protocol import AMPLIFICATION
from meshnode.net.dht.storage import RecordStore

__all__ = [
    "AMPLIFICATION",
    "DEFAULT_HOST",
    "HEADER_SIZE",
    "MAX_DATAGRAM",
    "REQUEST",
    "RESPONSE",
    "DHTConfig",
    "DHTNode",
    "DHTStatistics",
    "RecordStore",
    "estimate_size",
    "open_dht",
    "open_dht_thread",
]
