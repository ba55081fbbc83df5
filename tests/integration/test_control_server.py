"""The control server outlives a bug met by one request (issue 11).

Network rules: one control socket in the test's own folder, no network; every test
runs under ``trio.fail_after``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from meshnode import control
from meshnode.daemon import serve_control
from tests.system.daemons import control_frames

if TYPE_CHECKING:
    from pathlib import Path

    import pytest


class _BuggyNode:
    """A node whose ``status`` has a bug; ``peers`` works."""

    def status(self) -> None:
        raise RuntimeError("a bug in the node")

    def peers(self) -> list[str]:
        return []


async def _ask(path: Path, op: str) -> list[dict[str, Any]]:
    """One request; every frame of the answer, read until the daemon closes."""
    stream = await trio.open_unix_socket(str(path))
    async with stream:
        await stream.send_all(control.frame(control.request(op)))
        received = bytearray()
        while chunk := await stream.receive_some():
            received += chunk
    return control_frames(bytes(received))


async def test_an_unexpected_exception_is_logged_answered_and_closes_only_that_connection(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="meshnode")
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            path = await nursery.start(serve_control, _BuggyNode(), tmp_path)
            assert await _ask(path, "status") == [
                {
                    "ok": False,
                    "error": {
                        "type": "MeshError",
                        "message": "internal error in the daemon (see its log)",
                    },
                }
            ]
            assert await _ask(path, "peers") == [{"ok": True, "result": []}]
            nursery.cancel_scope.cancel()
    [logged] = caplog.records
    assert logged.exc_info is not None
    assert isinstance(logged.exc_info[1], RuntimeError)
