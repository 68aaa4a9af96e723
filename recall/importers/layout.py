"""Files of a published layout (fixed names, separators and columns), read and checked in one call."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import polars as pl

from recall.errors import RecallError
from recall.importers.text import (
    LINE,
    Rule,
    Skipped,
    check_lines,
    complete,
    decode_text,
    head_lines,
    integers,
    numbers,
    read_text,
)

_SEP_NAMES = {"\t": "tab", "::": "'::'", ",": "comma", "|": "'|'"}


@dataclass(frozen=True)
class TextFile:
    """One file of a published layout: name, separator, field names, the header line if it has one."""

    dataset: str
    name: str
    sep: str
    columns: tuple[str, ...]
    header: tuple[str, ...] = ()  # the header line's names, when the file has one
    quoted: bool = False
    small: bool = False  # read into memory and decoded (Latin-1 if not UTF-8)
    rest: bool = False  # the last field is the rest of the line (free text, unquoted)
    nulls: tuple[str, ...] = ()  # field values meaning "missing", e.g. NULL

    def layout(self) -> str:
        head = f", header {','.join(self.header)}" if self.header else ", no header"
        return f"{self.dataset} {self.name}: {_SEP_NAMES[self.sep]}-separated {', '.join(self.columns)}{head}"


def _check_header(spec: TextFile, source: Path | bytes, path: Path) -> None:
    """Refuse a file whose header is not the layout's (compared without case and spaces)."""
    found = [f.strip() for line in head_lines(source, path, limit=1) for f in line.split(spec.sep)]
    if [f.lower() for f in found] != [h.lower() for h in spec.header]:
        raise RecallError(f"'{path}' starts with {','.join(found) or 'nothing'!r}, not the header "
                          f"{','.join(spec.header)!r} of {spec.layout()}; is it a {spec.dataset} file?")


def read_file(path: Path, spec: TextFile, *, on_bad_lines: str, skipped: list[Skipped],
              required: Sequence[str] = (), ints: Sequence[str] = (), floats: Sequence[str] = (),
              rules: Sequence[Rule] = (), where: pl.Expr | None = None) -> pl.LazyFrame:
    """Scan and check one file of a layout.

    ``required`` fields must be filled, ``ints`` / ``floats`` must parse (and are
    cast once checked), ``rules`` are further checks; ``where`` restricts the
    lines read (e.g. one property of many). Skipped lines go into ``skipped``.
    Returns the fields (String unless cast), without the line number.
    """
    source = decode_text(path) if spec.small else path
    if spec.header:
        _check_header(spec, source, path)
    table = read_text(source, path=path, sep=spec.sep, layout=spec.layout(), header=bool(spec.header),
                      columns=spec.columns, quoted=spec.quoted, rest=spec.rest).with_nulls(spec.nulls)
    if where is not None:
        table = table.where(where)
    checks = [*complete(required), *integers(ints), *numbers(floats), *rules]
    rows, dropped = check_lines(table, checks, on_bad_lines)
    skipped.extend(d for d in (dropped,) if d)
    return rows.drop(LINE).with_columns([pl.col(c).cast(pl.Int64) for c in ints]
                                        + [pl.col(c).cast(pl.Float64) for c in floats])
