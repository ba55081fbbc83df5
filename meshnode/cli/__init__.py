"""The ``meshnode`` command (console script ``meshnode.cli:main``).

Its rooms: :mod:`~meshnode.cli.parser` (the grammar, also behind docs/cli.md),
:mod:`~meshnode.cli.commands` (what each command does, through the Client),
:mod:`~meshnode.cli.rendering` (text or ``--json``) and :mod:`~meshnode.cli.dispatch`
(one dispatcher: error lines and exit codes).
"""

from meshnode.cli.commands import parse_duration, parse_when
from meshnode.cli.dispatch import ExitStatus, exit_status_for, main, run
from meshnode.cli.parser import build_parser, render_docs
from meshnode.errors import UsageError

__all__ = [
    "ExitStatus",
    "UsageError",
    "build_parser",
    "exit_status_for",
    "main",
    "parse_duration",
    "parse_when",
    "render_docs",
    "run",
]
