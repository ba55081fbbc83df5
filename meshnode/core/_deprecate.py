"""Deprecations: a name keeps working for one release and says what replaces it.

Modelled on trio's ``_deprecate.py``: each warning names the thing, the version that
deprecated it, the version that removes it and the replacement, and points at the
caller's line (``stacklevel``), where the change has to be made.
"""

from __future__ import annotations

import warnings
from typing import Final

DEPRECATED_IN: Final = "0.2.0"
REMOVED_IN: Final = "0.3.0"


def warn_deprecated(thing: str, *, instead: str, stacklevel: int = 3) -> None:
    """Warn that ``thing`` is deprecated and goes in the next release; use ``instead``.

    ``stacklevel`` 3 names the caller of the function that calls this one.
    """
    warnings.warn(
        f"{thing} is deprecated since meshnode {DEPRECATED_IN} and goes in {REMOVED_IN}: "
        f"use {instead}",
        DeprecationWarning,
        stacklevel=stacklevel,
    )
