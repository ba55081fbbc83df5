"""The operator guide and the API page cannot drift from the code they describe.

- Every configuration key of :class:`meshnode.config.Config` (tables as
  ``table.key``) has a row in docs/operator-guide.md with its real default,
  and every row names a real key.
- Every public method of the client appears in docs/api.md.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from meshnode.client import Client
from meshnode.config import Config

DOCS = Path(__file__).resolve().parents[2] / "docs"
ROW = re.compile(r"^\| `([a-z_.]+)` \| (.+?) \| .+ \|$", re.MULTILINE)


def _shown(value: object) -> str:
    """A default as the guide writes it: TOML in backticks, or (none)."""
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, tuple):
        return "`[" + ", ".join(f'"{v}"' for v in value) + "]`"
    return f"`{value!r}`"


def _keys(config: object, prefix: str = "") -> dict[str, str]:
    keys: dict[str, str] = {}
    for f in dataclasses.fields(config):  # type: ignore[arg-type]
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            keys.update(_keys(value, f"{prefix}{f.name}."))
        else:
            keys[prefix + f.name] = _shown(value)
    return keys


def test_configuration_reference_matches_config() -> None:
    guide = (DOCS / "operator-guide.md").read_text()
    reference = guide.split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    documented = {key: default for key, default in ROW.findall(reference)}
    assert documented == _keys(Config())


def test_api_page_covers_the_client() -> None:
    page = (DOCS / "api.md").read_text()
    methods = [n for n, v in vars(Client).items() if callable(v) and not n.startswith("_")]
    missing = [name for name in methods if f".{name}(" not in page]
    assert missing == [], f"docs/api.md does not show {missing}"
