"""Mutations of valid inputs, deterministic under a ``random.Random``.

Byte-level: bit flips, interesting bytes, truncation, insertion, deletion,
duplication, splices with another seed and a target's dictionary tokens.
msgpack-aware: decode the input (leniently), replace one node of the tree with
a value of another type or an extreme value, and encode it again; this reaches
the checks behind the msgpack layer, where byte noise rarely gets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgpack

if TYPE_CHECKING:
    import random
    from collections.abc import Callable, Sequence

INTERESTING = bytes(
    [0x00, 0x01, 0x7F, 0x80, 0xFF, 0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xC5, 0xC6, 0xCA, 0xCB, 0xCC,
     0xCD, 0xCE, 0xCF, 0xD0, 0xD3, 0xD4, 0xD9, 0xDA, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF, 0x90, 0x9F,
     0xA0, 0xBF, 0x80, 0x8F, 0xE0]
)  # fmt: skip
"""Single bytes worth trying: edges, and msgpack type markers (nil, bool, bin, ext,
float, ints, str, array, map headers, fixmap, negative fixint)."""


def _extreme_values(rng: random.Random) -> list[object]:
    return [
        None,
        True,
        False,
        0,
        -1,
        1,
        2**32,
        2**63 - 1,
        2**64 - 1,
        -(2**63),
        1.5,
        float("nan"),
        "",
        "x" * rng.choice([1, 33, 255, 256, 4096]),
        "²:³",
        b"",
        bytes(rng.choice([16, 31, 32, 33, 64, 65])),
        [],
        [None] * rng.choice([1, 2, 7, 17, 300]),
        {},
        {"$type": []},
        {"$type": "peer"},
        _nest(rng.choice([64, 500])),  # packb stops at 511 levels: see _deep
    ]


def _nest(depth: int) -> object:
    value: object = []
    for _ in range(depth):
        value = [value]
    return value


def _nodes(tree: object, path: tuple[int | str, ...] = ()) -> list[tuple[int | str, ...]]:
    """Every position in a decoded document (the root is the empty path)."""
    found = [path]
    if isinstance(tree, list) and len(path) < 16:
        for i, child in enumerate(tree[:64]):
            found.extend(_nodes(child, (*path, i)))
    elif isinstance(tree, dict) and len(path) < 16:
        for key, child in list(tree.items())[:64]:
            if isinstance(key, (str, int)):
                found.extend(_nodes(child, (*path, key)))
    return found


def _replace(tree: object, path: tuple[int | str, ...], value: object) -> object:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(tree, list) and isinstance(head, int):
        copy = list(tree)
        copy[head] = _replace(copy[head], rest, value)
        return copy
    if isinstance(tree, dict):
        copy_map = dict(tree)
        copy_map[head] = _replace(copy_map[head], rest, value)
        return copy_map
    return tree


def _get(tree: object, path: tuple[int | str, ...]) -> object:
    for step in path:
        tree = tree[step]  # type: ignore[index]
    return tree


def msgpack_mutation(data: bytes, rng: random.Random) -> bytes | None:
    """One node of the document swapped for another type or an extreme value;
    None when ``data`` is not a msgpack document."""
    try:
        tree = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception:
        try:
            tree = msgpack.unpackb(data, raw=True, strict_map_key=False)
        except Exception:
            return None
    path = rng.choice(_nodes(tree))
    node = _get(tree, path)
    choice = rng.random()
    if choice < 0.15 and isinstance(node, int) and not isinstance(node, bool):
        value: object = node + rng.choice([-1, 1, 2**8, 2**16, 2**32, -(2**40)])
    elif choice < 0.3 and isinstance(node, (bytes, str)) and node:
        cut = rng.randrange(len(node) + 1)
        value = node[:cut] if rng.random() < 0.5 else node + node[:cut]
    elif choice < 0.45 and isinstance(node, list) and node:
        items = list(node)
        op = rng.randrange(3)
        if op == 0:
            del items[rng.randrange(len(items))]
        elif op == 1:
            items.append(rng.choice(items))
        else:
            rng.shuffle(items)
        value = items
    elif choice < 0.5 and isinstance(node, bytes):
        value = node.decode("latin-1")  # bin <-> str: same content, other type
    elif choice < 0.55 and isinstance(node, str):
        value = node.encode()
    else:
        value = rng.choice(_extreme_values(rng))
    try:
        packed: bytes = msgpack.packb(_replace(tree, path, value), use_bin_type=True)
    except Exception:
        return None
    return packed


def _flip(data: bytearray, rng: random.Random) -> None:
    for _ in range(rng.choice([1, 1, 1, 2, 4])):
        if data:
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)


def _interesting(data: bytearray, rng: random.Random) -> None:
    if data:
        data[rng.randrange(len(data))] = rng.choice(INTERESTING)


def _truncate(data: bytearray, rng: random.Random) -> None:
    if data:
        del data[rng.randrange(len(data)) :]


def _insert(data: bytearray, rng: random.Random) -> None:
    at = rng.randrange(len(data) + 1)
    data[at:at] = rng.randbytes(rng.choice([1, 1, 2, 4, 8, 32]))


def _delete(data: bytearray, rng: random.Random) -> None:
    if data:
        at = rng.randrange(len(data))
        del data[at : at + rng.choice([1, 1, 2, 4, 16])]


def _duplicate(data: bytearray, rng: random.Random) -> None:
    if data:
        at = rng.randrange(len(data))
        chunk = data[at : at + rng.choice([1, 4, 16, 64])]
        where = rng.randrange(len(data) + 1)
        data[where:where] = chunk


def _deep(data: bytearray, rng: random.Random) -> None:
    """Deeply nested one-element arrays, beyond what the packer would write."""
    at = rng.randrange(len(data) + 1)
    data[at:at] = b"\x91" * rng.choice([100, 999, 1100, 3000]) + b"\x90"


_BYTE_OPS: list[Callable[[bytearray, random.Random], None]] = [
    _deep,
    _flip,
    _flip,
    _interesting,
    _truncate,
    _insert,
    _delete,
    _duplicate,
]


def mutate(
    data: bytes,
    rng: random.Random,
    *,
    seeds: Sequence[bytes],
    tokens: Sequence[bytes] = (),
    max_size: int = 1 << 20,
) -> bytes:
    """One to three stacked mutations of ``data``."""
    out = data
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        kind = rng.random()
        if kind < 0.25:
            swapped = msgpack_mutation(out, rng)
            if swapped is not None:
                out = swapped
                continue
        buf = bytearray(out)
        if kind < 0.35 and seeds:
            other = rng.choice(seeds)
            cut, cut_other = rng.randrange(len(buf) + 1), rng.randrange(len(other) + 1)
            buf = buf[:cut] + other[cut_other:]
        elif kind < 0.45 and tokens:
            at = rng.randrange(len(buf) + 1)
            token = rng.choice(tokens)
            if rng.random() < 0.5:
                buf[at:at] = token
            else:
                buf[at : at + len(token)] = token
        else:
            rng.choice(_BYTE_OPS)(buf, rng)
        out = bytes(buf)
    return out[:max_size]


def random_bytes(rng: random.Random, longest: int) -> bytes:
    """Noise: mostly short, sometimes as long as the longest seed and beyond."""
    size = rng.choice([0, 1, 2, 3, 8, 16, 64, rng.randrange(longest * 2 + 2)])
    return rng.randbytes(size)
