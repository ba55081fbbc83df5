"""The sans-I/O core: pure functions and values, no I/O, no clock, no randomness.

Everything that needs the current time or random bytes takes them as
arguments (``now``, ``rng``); :mod:`meshnode.api` supplies the system's.
"""
