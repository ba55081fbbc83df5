"""The network simulator: many nodes running the real machines in one process.

Test and benchmark harness, beside ``bench/`` and not shipped in the ``meshnode``
package:
- ``network.py``: the event queue, sessions and bookkeeping (:class:`Simulation`);
  ``tests/multinode`` runs scenarios on it, and the unit tests take
  :class:`SeededRng` wherever the core wants an ``rng``;
- ``internet.py``: the same at internet scale: round trips, loss as TCP
  retransmission, store passes, dialling, churn, a DHT cost model, direct mail;
- ``scenarios.py``, ``report.py``, ``__main__.py``: ``python -m sim`` (``make sim``),
  the runs of docs/performance.md, "Simulation".
"""

from sim.network import SeededRng, SimNode, Simulation, SimulationStatistics

__all__ = ["SeededRng", "SimNode", "Simulation", "SimulationStatistics"]
