"""Strict, bounded msgpack: the one place where untrusted bytes become values.

Rules:
1. Every decode is bounded: total size, string, binary, array and map lengths.
   msgpack's C unpacker bounds nesting at about a thousand levels, too deep for
   code that walks the value recursively; such callers pass ``max_depth``.
2. Every decode is total: any failure becomes :class:`DecodeError`.
3. Canonical means exactly one encoding: :func:`unpack_canonical` re-encodes
   what it decoded and refuses input that differs. msgpack always writes the
   shortest form of each integer, string and container header, and meshnode's
   structures are arrays (no maps, whose key order would be a second choice),
   so the re-encoding is the canonical form.
4. Floats, extension types and timestamps are never valid in meshnode data.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Final

import msgpack

if TYPE_CHECKING:
    from collections.abc import Callable

MAX_DOCUMENT: Final = 1 << 20


class DecodeError(ValueError):
    """Bytes that are not a bounded, canonical msgpack document (callers re-raise)."""


def pack(value: object) -> bytes:
    """Encode ``value`` in the canonical form (bin for bytes, str for text)."""
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def unpack(
    data: bytes,
    *,
    max_size: int = MAX_DOCUMENT,
    max_str: int = 65536,
    max_bin: int = 65536,
    max_array: int = 1024,
    max_map: int = 0,
    max_depth: int | None = None,
    max_containers: int | None = None,
) -> object:
    """Decode one msgpack document within the given bounds, refusing trailing bytes.

    ``max_depth`` bounds how many arrays and maps may nest (a scalar is depth 0);
    None leaves msgpack's own bound. ``max_containers`` bounds how many arrays and
    maps the document holds in all, counted as they are built, so that a document
    whose every byte is an empty map stops early instead of growing to some 80
    times its size.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError("not bytes")
    if len(data) > max_size:
        raise DecodeError(f"document of {len(data)} bytes exceeds {max_size}")
    hooks: dict[str, Callable[[Any], Any]] = {}
    if max_containers is not None:
        built = itertools.count(1)

        def counted(container: Any) -> Any:
            if next(built) > max_containers:
                raise _TooMany
            return container

        hooks = {"list_hook": counted, "object_hook": counted}
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=max_str,
            max_bin_len=max_bin,
            max_array_len=max_array,
            max_map_len=max_map,
            max_ext_len=0,
            **hooks,
        )
    except _TooMany:
        raise DecodeError(f"more than {max_containers} arrays and maps") from None
    except (
        ValueError,
        TypeError,
        OverflowError,
        msgpack.ExtraData,
        msgpack.FormatError,
        msgpack.StackError,
        RecursionError,
        UnicodeDecodeError,
    ) as exc:
        raise DecodeError(f"malformed msgpack: {type(exc).__name__}") from None
    if max_depth is not None:
        _check_depth(value, max_depth)
    return value


class _TooMany(Exception):
    """Raised by the container count inside msgpack's hooks: stops the decode."""


def _check_depth(value: object, max_depth: int) -> None:
    """Refuse ``value`` if arrays and maps nest deeper than ``max_depth`` (no recursion)."""
    pending: list[tuple[object, int]] = [(value, 0)]
    while pending:
        node, depth = pending.pop()
        if isinstance(node, dict):
            children: list[object] = [*node.keys(), *node.values()]
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth == max_depth:
            raise DecodeError(f"containers nested deeper than {max_depth}")
        pending.extend((child, depth + 1) for child in children)


def describe(value: object, limit: int = 40) -> str:
    """A short repr of a decoded value for an error message.

    Containers are named by type only: repr of a deeply nested list (which the
    decoder accepts, up to msgpack's depth limit) raises RecursionError.
    """
    if isinstance(value, (list, tuple, dict)):
        return f"a {type(value).__name__}"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def unpack_canonical(data: bytes, **bounds: int) -> object:
    """:func:`unpack`, then refuse the input unless it is the canonical encoding."""
    value = unpack(data, **bounds)
    try:
        again = pack(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise DecodeError(f"not re-encodable: {type(exc).__name__}") from None
    if again != bytes(data):
        raise DecodeError("not the canonical encoding")
    return value
