"""Plain-text tables as the report prints them, in linear time. Pure.

The layout is tabulate's "simple" format, which the report used before: a header line, a line of dashes,
then one line per row; columns two spaces apart, each at least two wider than its header; cells stripped,
lines stripped on the right; a column of whole numbers right-aligned, every other column left-aligned.
tabulate took 3.1 s for 40,000 rows (it guesses every cell's type with regular expressions); this takes a
small fraction of that.

Two deliberate differences, both for a person reading the table in a terminal:
- A column is right-aligned only when every cell is an int. tabulate also right-aligns text that looks
  like a number and rewrites it (`007` became `7`); here text is printed as it is.
- Widths are display widths: an East Asian wide or full-width character takes two columns, a combining
  mark none. tabulate (without the optional wcwidth package, as installed) counted characters, which
  misaligns a column holding such names.
A cell with a line break spans several lines, as in tabulate.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

Cell = str | int | None
_GAP = "  "
_MIN_PADDING = 2  # every column at least this much wider than its header (tabulate's MIN_PADDING)


def display_width(text: str) -> int:
    """Columns `text` takes in a terminal: wide and full-width characters two, combining marks none."""
    if text.isascii():
        return len(text)
    width = 0
    for char in text:
        if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def _text(cell: Cell) -> str:
    return "" if cell is None else str(cell).strip()


def simple(headers: Sequence[str], rows: Sequence[Sequence[Cell]]) -> str:
    """The table of `rows` under `headers`, every row as long as `headers`."""
    count = len(headers)
    numeric = [bool(rows) and all(type(row[i]) is int for row in rows) for i in range(count)]
    # Column by column, each cell's text made by a C loop (map), not a Python expression per cell.
    columns = [_texts(column) for column in zip(*rows, strict=False)] if rows else [()] * count
    # Each column joined once: the line-break and ASCII tests run in C over it, not per cell.
    joined = ["".join(column) for column in columns]
    multiline = any("\n" in h or "\r" in h for h in headers) or any(
        "\n" in text or "\r" in text for text in joined
    )
    if multiline:
        return _multiline(headers, _rows(columns), numeric)
    ascii_only = [(text + "".join(headers)).isascii() for text in joined]
    widths = []
    for header, column, plain in zip(headers, columns, ascii_only, strict=True):
        measure = len if plain else display_width
        widths.append(max([measure(header) + _MIN_PADDING, *map(measure, column)]))
    lines = [
        _line([_pad(h, w, right) for h, w, right in zip(headers, widths, numeric, strict=True)]),
        _GAP.join("-" * w for w in widths),
    ]
    if all(ascii_only):
        # One format call per row, made by map in C: the cells' widths are their lengths.
        template = _GAP.join(
            f"{{:{'>' if right else '<'}{w}}}" for w, right in zip(widths, numeric, strict=True)
        )
        if rows:
            lines += map(str.rstrip, map(template.format, *columns))
    else:
        lines += [
            _line([_pad(c, w, right) for c, w, right in zip(row, widths, numeric, strict=True)])
            for row in _rows(columns)
        ]
    return "\n".join(lines)


def _texts(column: Sequence[Cell]) -> tuple[str, ...]:
    """The cells' texts (_text); a column of str, nearly every one, without a Python call per cell."""
    if set(map(type, column)) == {str}:
        return tuple(map(str.strip, column))  # type: ignore[arg-type]  # all str, tested just now
    return tuple(map(_text, column))


def _rows(columns: Sequence[tuple[str, ...]]) -> list[list[str]]:
    return [list(row) for row in zip(*columns, strict=True)]


def _pad(text: str, width: int, right: bool) -> str:
    fill = " " * max(0, width - display_width(text))
    return fill + text if right else text + fill


def _line(cells: Sequence[str]) -> str:
    return _GAP.join(cells).rstrip()


def _multiline(headers: Sequence[str], texts: list[list[str]], numeric: list[bool]) -> str:
    """The rare table with a line break in a cell: each row takes as many lines as its tallest cell."""

    def split(text: str) -> list[str]:
        return text.splitlines() or [""]

    widths = [
        max(
            [max(map(display_width, split(h))) + _MIN_PADDING]
            + [max(map(display_width, split(row[i]))) for row in texts]
        )
        for i, h in enumerate(headers)
    ]

    def block(cells: Sequence[str]) -> list[str]:
        parts = [split(c) for c in cells]
        height = max(len(p) for p in parts)
        return [
            _line(
                [
                    _pad(p[n], w, right) if n < len(p) else " " * w
                    for p, w, right in zip(parts, widths, numeric, strict=True)
                ]
            )
            for n in range(height)
        ]

    lines = block(headers)
    lines.append(_GAP.join("-" * w for w in widths))
    for row in texts:
        lines += block(row)
    return "\n".join(lines)
