"""The sans-I/O core: pure functions and values, no I/O, no clock, no randomness.

Everything that needs the current time or random bytes takes them as
arguments (``now``, ``rng``). The conveniences of the public classes
(``Identity.generate``, ``Channel.invite``, ``Bulletin.create``, ...) take them
from the providers installed from above (:mod:`meshnode.core.providers`):
:mod:`meshnode.api` supplies the system's.
"""
