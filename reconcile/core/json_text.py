"""JSON text as `json.dumps(value, indent=2)` writes it, character for character, in a fraction of its time.

With `indent` the standard library encodes in pure Python (its C encoder only writes compact JSON): 1 s
of a 40,000-row report. Here strings are escaped by the same C function json uses (ASCII-only, as
`ensure_ascii` does) and the rest is one pass that knows the few types a report holds. Pure.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from json import encoder as _encoder
from json.encoder import encode_basestring_ascii as _string
from typing import Any

_INDENT = 2
_NEWLINES = ["\n" + " " * (_INDENT * level) for level in range(32)]


def dumps(value: Any) -> str:
    """`json.dumps(value, indent=2)` for dicts with str keys, lists, tuples, str, int, float, bool, None."""
    return _text(value, 0)


def dumps_with_rows(value: Mapping[str, Any], rows: str, *, encoded: bool = False) -> str:
    """`json.dumps(value, indent=2)`, but each item of the list `value[rows]` is one compact line.

    A program reads the same JSON (keys and their order as ever); a person reads one row per line, and the
    rows go through json's C encoder (a third of the indented writer's time for 40,000 report rows).
    Compact as `json.dumps(row, separators=(", ", ": "))` writes it, strings ASCII-escaped. `encoded`: the
    rows are that text already (`row`, or a writer its tests hold to it).
    """
    if not isinstance(value.get(rows), list | tuple):
        return dumps(value)
    inner, row_line = _newline(1), _newline(2)
    # The pieces, joined once at the end: a 40,000-row report is 15 MB, and every `+` of it was another
    # copy into freshly mapped memory (seven copies: a fifth of the command, mostly page faults).
    parts = ["{"]
    for key, item in value.items():
        if not isinstance(key, str):
            raise TypeError(f"keys must be str, not {type(key).__name__}")
        parts += (inner if len(parts) == 1 else "," + inner, _string(key), ": ")
        if key == rows and item:
            texts = item if encoded else [_row(row) for row in item]
            spaced = ["," + row_line] * (2 * len(texts))  # each row after its separator, in C
            spaced[0] = "[" + row_line
            spaced[1::2] = texts
            parts += spaced
            parts += (inner, "]")
        else:
            parts.append("[]" if key == rows else _text(item, 1))
    parts.append("\n}")
    return "".join(parts)


def _refuse(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# json's own C encoder, made once: json.dumps makes one per call, which would cost as much as the row.
_make: Callable[..., Callable[[Any, int], Sequence[str]]] | None = getattr(_encoder, "c_make_encoder", None)
_c_row = _make(None, _refuse, _string, None, ": ", ", ", False, False, True) if _make is not None else None
_py_row = _encoder.JSONEncoder(separators=(", ", ": ")).encode


def _row(row: Any) -> str:
    return "".join(_c_row(row, 0)) if _c_row is not None else _py_row(row)


row = _row  # one row as dumps_with_rows writes it
string = _string  # a str as JSON text, ASCII-escaped


@functools.lru_cache(maxsize=1024)
def strings(items: tuple[str, ...]) -> str:
    """A tuple of str as `row` writes a list of them; cached: a report's rows share a few jail lists."""
    return "[" + ", ".join([_string(item) for item in items]) + "]"


def _newline(level: int) -> str:
    return _NEWLINES[level] if level < len(_NEWLINES) else "\n" + " " * (_INDENT * level)


def _text(value: Any, level: int) -> str:
    kind = type(value)
    if kind is str:
        return _string(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if kind is dict or (kind is not list and kind is not tuple and isinstance(value, Mapping)):
        return _object(value, level)
    if kind is list or kind is tuple or isinstance(value, list | tuple):
        return _array(value, level)
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, str):
        return _string(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _object(value: Mapping[Any, Any], level: int) -> str:
    if not value:
        return "{}"
    for key in value:
        if not isinstance(key, str):
            raise TypeError(f"keys must be str, not {type(key).__name__}")
    inner = _newline(level + 1)
    # Strings and nulls, most values, inline: a call per value would cost a third more.
    members = [
        _string(key)
        + ": "
        + (_string(item) if type(item) is str else "null" if item is None else _text(item, level + 1))
        for key, item in value.items()
    ]
    return "{" + inner + ("," + inner).join(members) + _newline(level) + "}"


def _array(value: Sequence[Any], level: int) -> str:
    if not value:
        return "[]"
    inner = _newline(level + 1)
    members = [_string(item) if type(item) is str else _text(item, level + 1) for item in value]
    return "[" + inner + ("," + inner).join(members) + _newline(level) + "]"


def _float(value: float) -> str:
    # As json does: repr, and JavaScript's names for the values JSON has no number for.
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return float.__repr__(value)
