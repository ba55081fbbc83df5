"""The one dispatcher of the ``meshnode`` command: exit codes and error lines.

Every known error becomes one line on stderr, ``meshnode: error: ...``, and an
:class:`ExitStatus`; ``--traceback`` shows the whole story instead.
"""

from __future__ import annotations

import sys
from enum import IntEnum
from typing import TYPE_CHECKING, NoReturn

from meshnode.cli.parser import build_parser
from meshnode.errors import (
    DaemonUnreachable,
    MeshError,
    OperationTimeout,
    PeerDisconnected,
    ProtocolError,
    UsageError,
)

if TYPE_CHECKING:
    from collections.abc import Sequence


class ExitStatus(IntEnum):
    """The documented exit codes of every ``meshnode`` command."""

    OK = 0
    ERROR = 1
    USAGE = 2
    DAEMON_UNREACHABLE = 3
    TIMEOUT = 4
    PEER_FAILURE = 5
    INTERRUPTED = 130


_EXIT_FOR: tuple[tuple[type[BaseException], ExitStatus], ...] = (
    (UsageError, ExitStatus.USAGE),
    (DaemonUnreachable, ExitStatus.DAEMON_UNREACHABLE),
    (OperationTimeout, ExitStatus.TIMEOUT),
    (ProtocolError, ExitStatus.PEER_FAILURE),
    (PeerDisconnected, ExitStatus.PEER_FAILURE),
)


def exit_status_for(exc: MeshError) -> ExitStatus:
    """The documented exit code of an error (1 unless it is one of the special kinds)."""
    for kind, status in _EXIT_FOR:
        if isinstance(exc, kind):
            return status
    return ExitStatus.ERROR


def run(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit status (``main`` exits with it)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    traceback_wanted = "--traceback" in args_list
    try:
        args = build_parser().parse_args(args_list)
        if not hasattr(args, "run"):
            build_parser().print_help(sys.stderr)
            return ExitStatus.USAGE
        args.run(args)
        return ExitStatus.OK
    except KeyboardInterrupt:
        if traceback_wanted:
            raise
        print("meshnode: interrupted", file=sys.stderr)
        return ExitStatus.INTERRUPTED
    except MeshError as exc:
        if traceback_wanted:
            raise
        print(f"meshnode: error: {exc}", file=sys.stderr)
        return exit_status_for(exc)
    except BrokenPipeError:
        # A reader such as `head` went away: not an error of ours.
        sys.stderr.close()
        return ExitStatus.OK


def main() -> NoReturn:
    """Console-script entry point."""
    sys.exit(run())
