"""Imports point one way (STYLE.md section 1), checked on the source of every module.

Each module of the ``meshnode`` package is parsed with ``ast``; every import it
makes (at the top, inside functions, under ``TYPE_CHECKING``) is checked
against the table below. A module is governed by the longest layer name that
is a prefix of its own name; a module that no layer covers fails the test, so
a new top-level module makes its author decide where it belongs. Layers that
do not exist yet are simply not exercised.

Rules enforced:
1. ``LAYERS``: which meshnode modules each layer may import (core, store, net,
   control, daemon, client, cli and the glue around them).
2. ``CORE_FORBIDDEN``: the core does no I/O and reads no clock or randomness;
   its third-party imports are limited to ``CORE_THIRD_PARTY``, and it never
   calls the ``open`` builtin.
3. ``ONLY_IN``: the asyncio island (asyncio, kademlia, rpcudp, trio_asyncio)
   lives in the ``meshnode.net.dht`` package alone, each library in the
   modules that need it (the trio-asyncio bridge in ``hosts`` only); sqlite3
   in the ``meshnode.store`` package alone (``package.*`` names a package and
   every module in it).
4. Importing ``meshnode`` or ``meshnode.cli`` loads no part of the asyncio
   island, so ``meshnode post`` starts fast.
5. No cycles: the layers of ``LAYERS`` stand on one another without a cycle
   (each may import itself, and the package root re-exports all of them), and
   no module imports itself through others, so ``meshnode.net`` in particular
   imports nothing above it, directly or not (its rooms never import
   ``net/node.py``). The package root is left out of the module graph: its
   imports are lazy re-exports, made under ``TYPE_CHECKING`` only.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest

if TYPE_CHECKING:
    from collections.abc import Collection, Iterator, Mapping

PACKAGE: Final = Path(__file__).resolve().parents[2] / "meshnode"

# layer: the meshnode modules (or packages) it may import. errors and the pure
# core are everybody's vocabulary; above them each layer names what it stands on.
CORE: Final = "meshnode.core"
LAYERS: Final[dict[str, tuple[str, ...]]] = {
    "meshnode": ("meshnode",),  # the package __init__ re-exports from all of them
    "meshnode.errors": (),
    "meshnode.core": ("meshnode.errors", CORE),
    "meshnode.store": ("meshnode.errors", CORE, "meshnode.store"),
    # How a log names peers: below everything that logs them.
    "meshnode.redact": (),
    # What a node holds and writes, over the store: no I/O of its own but the store's.
    "meshnode.memberships": ("meshnode.errors", CORE, "meshnode.store"),
    "meshnode.archive": (
        "meshnode.errors", CORE, "meshnode.store", "meshnode.memberships", "meshnode.redact",
    ),
    # The shell knows no data directory and no configuration file: launch does.
    "meshnode.net": (
        "meshnode.errors", CORE, "meshnode.store", "meshnode.archive", "meshnode.memberships",
        "meshnode.redact", "meshnode.net",
    ),
    # open_node: the data directory (home) and the daemon's tables (config) around net.
    "meshnode.launch": (
        "meshnode.errors", CORE, "meshnode.store", "meshnode.net", "meshnode.home",
        "meshnode.config",
    ),
    "meshnode.control": ("meshnode.errors", CORE),
    "meshnode.config": ("meshnode.errors", CORE),
    "meshnode.paths": ("meshnode.errors",),
    "meshnode.daemon": (
        "meshnode.errors", CORE, "meshnode.net", "meshnode.launch", "meshnode.control",
        "meshnode.config", "meshnode.paths", "meshnode.redact",
    ),
    "meshnode.client": ("meshnode.errors", CORE, "meshnode.control", "meshnode.paths"),
    # The offline side of the CLI (init, id): the data directory and its identity.
    "meshnode.home": (
        "meshnode.errors", CORE, "meshnode.store", "meshnode.api", "meshnode.paths",
    ),
    "meshnode.cli": (
        "meshnode.errors", CORE, "meshnode.cli", "meshnode.client", "meshnode.store",
        "meshnode.daemon", "meshnode.config", "meshnode.paths", "meshnode.home", "meshnode.api",
    ),
    # Daemons as child processes: readiness, streams awaited through the client, stop.
    "meshnode.supervise": ("meshnode.errors", CORE, "meshnode.client"),
    # make demo: drives real daemons through the command line and the client.
    "meshnode.demo": ("meshnode.errors", "meshnode.client", "meshnode.supervise"),
    # The Python API, embedded (net) or through a running daemon (client).
    "meshnode.api": (
        "meshnode.errors", CORE, "meshnode.store", "meshnode.net", "meshnode.client",
        "meshnode.control", "meshnode.paths",
    ),
}  # fmt: skip

CORE_THIRD_PARTY: Final = frozenset({"nacl", "msgpack"})
CORE_FORBIDDEN: Final = frozenset(
    {
        *("trio", "asyncio", "trio_asyncio", "kademlia", "rpcudp", "socket", "ssl"),
        *("select", "selectors", "time", "datetime", "random", "secrets", "uuid"),
        *("os", "sys", "io", "pathlib", "shutil", "tempfile", "glob", "fcntl", "mmap"),
        *("sqlite3", "subprocess", "signal", "threading", "multiprocessing", "logging"),
        *("urllib", "http", "pickle", "shelve"),
    }
)
ONLY_IN: Final[dict[str, frozenset[str]]] = {
    "asyncio": frozenset({"meshnode.net.dht.protocol", "meshnode.net.dht.hosts"}),
    "kademlia": frozenset({"meshnode.net.dht.protocol", "meshnode.net.dht.storage"}),
    "rpcudp": frozenset({"meshnode.net.dht.protocol"}),
    "trio_asyncio": frozenset({"meshnode.net.dht.hosts"}),
    "sqlite3": frozenset({"meshnode.store.*"}),
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES: Final = _modules()


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _layer_of(module: str) -> str | None:
    """The longest layer that governs ``module`` (the root only governs itself)."""
    candidates = [k for k in LAYERS if k == module or (k != "meshnode" and _within(module, k))]
    return max(candidates, key=len, default=None)


def _imports(
    module: str, path: Path, known: Collection[str] = MODULES.keys()
) -> Iterator[tuple[str, int]]:
    """(absolute module name, line) for every import in ``path``."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                origin = ".".join([*base, node.module] if node.module else base)
            else:
                origin = node.module or ""
            for alias in node.names:
                # ``from meshnode.core import codec`` imports the module meshnode.core.codec.
                candidate = f"{origin}.{alias.name}"
                yield (candidate if candidate in known else origin), node.lineno


def _open_calls(path: Path) -> Iterator[int]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        func = node.func if isinstance(node, ast.Call) else None
        if isinstance(func, ast.Name) and func.id == "open":
            yield func.lineno


def _layer_violations(module: str, imports: list[tuple[str, int]]) -> list[str]:
    layer = _layer_of(module)
    if layer is None:
        return [f"{module} is in no layer of tests/unit/test_layers.py: add it to LAYERS"]
    allowed = LAYERS[layer]
    return [
        f"line {line}: {name} (the {layer} layer may import only {allowed})"
        for name, line in imports
        if _within(name, "meshnode") and not any(_within(name, a) for a in allowed)
    ]


def _io_violations(imports: list[tuple[str, int]], open_calls: list[int]) -> list[str]:
    wrong = []
    for name, line in imports:
        top = name.partition(".")[0]
        if top == "meshnode":
            continue
        if top in CORE_FORBIDDEN:
            wrong.append(f"line {line}: {name} (I/O, clock or randomness)")
        elif top not in sys.stdlib_module_names and top not in CORE_THIRD_PARTY:
            wrong.append(f"line {line}: {name} (third-party beyond {sorted(CORE_THIRD_PARTY)})")
    return wrong + [f"line {line}: open() builtin" for line in open_calls]


def _one_of(module: str, places: Collection[str]) -> bool:
    """Whether ``module`` is one of ``places``: modules, or ``package.*`` for a package
    and every module in it."""
    return any(_within(module, p[:-2]) if p.endswith(".*") else module == p for p in places)


def _island_violations(module: str, imports: list[tuple[str, int]]) -> list[str]:
    return [
        f"line {line}: {name} (only {sorted(ONLY_IN[top])} may)"
        for name, line in imports
        if (top := name.partition(".")[0]) in ONLY_IN and not _one_of(module, ONLY_IN[top])
    ]


def _cycle(graph: Mapping[str, Collection[str]]) -> list[str]:
    """A cycle of ``graph`` (its first node repeated at the end), or [] if none."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str]:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return []
        path.append(node)
        for after in sorted(graph.get(node, ())):
            found = visit(after)
            if found:
                return found
        path.pop()
        done.add(node)
        return []

    for start in sorted(graph):
        found = visit(start)
        if found:
            return found
    return []


def _layer_graph() -> dict[str, set[str]]:
    """Which layers each layer stands on (itself and the package root left out)."""
    graph: dict[str, set[str]] = {}
    for layer, allowed in LAYERS.items():
        if layer == "meshnode":
            continue
        below = {_layer_of(a) for a in allowed} - {layer, "meshnode", None}
        graph[layer] = {b for b in below if b is not None}
    return graph


def _module_graph() -> dict[str, set[str]]:
    """Which meshnode modules each module imports (the lazy package root left out)."""
    return {
        module: {name for name, _ in _imports(module, path) if name in MODULES} - {module}
        for module, path in MODULES.items()
        if module != "meshnode"
    }


def test_the_package_is_found() -> None:
    assert {"meshnode", "meshnode.errors", "meshnode.core.bulletin"} <= set(MODULES)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_one_way(module: str) -> None:
    wrong = _layer_violations(module, list(_imports(module, MODULES[module])))
    assert not wrong, f"{module}: {wrong}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _within(m, CORE)))
def test_core_does_no_io(module: str) -> None:
    path = MODULES[module]
    wrong = _io_violations(list(_imports(module, path)), list(_open_calls(path)))
    assert not wrong, f"{module} is sans-I/O: {wrong}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_islands_stay_in_their_module(module: str) -> None:
    wrong = _island_violations(module, list(_imports(module, MODULES[module])))
    assert not wrong, f"{module}: {wrong}"


def test_the_layers_form_no_cycle() -> None:
    assert _cycle(_layer_graph()) == []


def test_no_module_imports_itself_through_others() -> None:
    assert _cycle(_module_graph()) == []


def test_the_checker_sees_cycles() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []
    assert "meshnode.net" not in _layer_graph()["meshnode.net"]
    assert "meshnode.config" not in _layer_graph()["meshnode.net"]


def test_the_checker_sees_violations(tmp_path: Path) -> None:
    """Every import form is resolved, so a violation cannot hide from the tests above."""
    path = tmp_path / "bad.py"
    path.write_text(
        "import os.path\n"
        "from . import codec\n"
        "from .. import cli\n"
        "from meshnode.core import crypto\n"
        "import trio_asyncio\n"
        "def f():\n"
        "    from meshnode.net import node\n"
        "    return open('x')\n"
    )
    known = {"meshnode.cli", "meshnode.core.codec", "meshnode.core.crypto", "meshnode.net.node"}
    imports = sorted(_imports("meshnode.core.bad", path, known))
    assert imports == [
        ("meshnode.cli", 3),
        ("meshnode.core.codec", 2),
        ("meshnode.core.crypto", 4),
        ("meshnode.net.node", 7),
        ("os.path", 1),
        ("trio_asyncio", 5),
    ]
    assert len(_layer_violations("meshnode.core.bad", imports)) == 2  # cli and net
    assert len(_io_violations(imports, list(_open_calls(path)))) == 3  # os, trio_asyncio, open
    assert len(_island_violations("meshnode.core.bad", imports)) == 1
    assert _island_violations("meshnode.net.dht.hosts", imports) == []
    assert _island_violations("meshnode.store.schema", [("sqlite3", 1)]) == []
    assert _island_violations("meshnode.storage", [("sqlite3", 1)]) != []
    assert _layer_violations("meshnode.brand_new", []) != []
    assert _layer_of("meshnode.core.bad") == "meshnode.core"
    assert _layer_of("meshnode.net.node") == "meshnode.net"
    assert _layer_of("meshnode") == "meshnode"


def test_importing_the_api_and_cli_loads_no_asyncio_island() -> None:
    code = (
        "import sys, meshnode, meshnode.cli\n"
        "meshnode.Identity, meshnode.Bulletin, meshnode.Channel\n"
        "heavy = {'kademlia', 'rpcudp', 'trio_asyncio'} & set(sys.modules)\n"
        "print(sorted(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_the_client_side_loads_neither_trio_nor_nacl() -> None:
    """``meshnode post`` goes through the CLI, the client and the control table only."""
    code = (
        "import sys, meshnode.cli.commands, meshnode.client, meshnode.control\n"
        "print(sorted({'trio', 'nacl', 'sqlite3'} & set(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
