"""Fixtures of the hostile suite: the daemon victims come from the system tests' launcher."""

from __future__ import annotations

from tests.system.conftest import make_mesh

__all__ = ["make_mesh"]
