"""The network simulator: many nodes running the real gossip machine in one process.

Test and benchmark harness, beside ``bench/`` and not shipped in the ``meshnode``
package: ``tests/multinode`` runs scenarios on it, and the unit tests take
:class:`SeededRng` wherever the core wants an ``rng``.
"""

from sim.network import SeededRng, SimNode, Simulation, SimulationStatistics

__all__ = ["SeededRng", "SimNode", "Simulation", "SimulationStatistics"]
