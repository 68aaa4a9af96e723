"""Taobao UserBehavior (Alibaba Tianchi): ``UserBehavior.csv``, about 100M rows in the full set."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recall import schema as S
from recall.errors import RecallError
from recall.importers.common import map_values
from recall.importers.plan import Plan
from recall.importers.text import (
    check_lines,
    complete,
    existing,
    head_lines,
    integers,
    one_of,
    read_text,
)

TAOBAO_FILE = "UserBehavior.csv"
TAOBAO_COLUMNS = ("user_id", "item_id", "category_id", "behavior_type", "timestamp")
TAOBAO_INTEGERS = ("user_id", "item_id", "category_id", "timestamp")
# Page views are the click of this log; the other three already use our names.
TAOBAO_BEHAVIORS = {"pv": "click", "fav": "fav", "cart": "cart", "buy": "buy"}
LAYOUT = "5 comma-separated columns " + ",".join(TAOBAO_COLUMNS)


def _taobao_path(src: str | Path) -> Path:
    path = existing(src, "Taobao source")
    if not path.is_dir():
        return path
    csv = path / TAOBAO_FILE
    if csv.is_file():
        return csv
    found = sorted(p.name for p in path.glob("*.csv"))
    raise RecallError(
        f"no '{TAOBAO_FILE}' in folder '{path}' (CSV files there: {', '.join(found) or 'none'}); "
        "pass the CSV file itself as the source"
    )


def _first_line_layout(path: Path) -> tuple[tuple[str, ...], bool]:
    """Column order and whether the first line is a header.

    The first line is a header when none of its fields is an integer: a data
    line always has four integer fields, so a corrupt data line is still
    reported as such rather than swallowed as a header. A header naming our
    five columns in another order is trusted.
    """
    lines = head_lines(path, path, limit=1)
    if not lines:
        raise RecallError(f"'{path}' is empty; expected {LAYOUT}")
    fields = [f.strip() for f in lines[0].split(",")]
    if len(fields) != len(TAOBAO_COLUMNS):
        raise RecallError(
            f"'{path}' has {len(fields)} comma-separated column(s) per line but the Taobao "
            f"UserBehavior format has {len(TAOBAO_COLUMNS)}: {','.join(TAOBAO_COLUMNS)}; "
            "check the file, or import it with the 'generic' importer and a column mapping"
        )
    if any(f.lstrip("+-").isdigit() for f in fields):
        return TAOBAO_COLUMNS, False
    names = tuple(f.lower() for f in fields)
    return (names if sorted(names) == sorted(TAOBAO_COLUMNS) else TAOBAO_COLUMNS), True


def plan_taobao(src: str | Path, *, on_bad_lines: str = "error") -> Plan:
    """Import the Taobao UserBehavior log (Alibaba Tianchi).

    Parameters
    ----------
    src
        ``UserBehavior.csv`` or a folder containing it. Comma-separated, five
        columns ``user_id,item_id,category_id,behavior_type,timestamp`` (epoch
        seconds); no header in the original, but a header line is detected and
        skipped (and if it names these five columns in another order, the
        names are used).
    on_bad_lines
        ``"error"`` refuses a line with a missing or unparsable field, naming it;
        ``"skip"`` drops such lines and records how many (the published 84k head
        of the log ends in a truncated line).

    Returns
    -------
    Plan
        ``events`` with ``pv`` mapped to ``click`` (``fav``, ``cart``, ``buy``
        unchanged) and ``items`` with one ``category_id`` per item: the most
        frequent one in the log, ties broken by the smallest id.
    """
    path = _taobao_path(src)
    columns, header = _first_line_layout(path)
    table = read_text(path, path=path, sep=",", layout=LAYOUT, header=header, columns=columns)
    hint = "use the 'generic' importer with behavior_map for other logs"
    rules = [*complete(TAOBAO_COLUMNS), *integers(TAOBAO_INTEGERS),
             one_of("behavior_type", list(TAOBAO_BEHAVIORS), hint, lowercase=True)]
    rows, skipped = check_lines(table, rules, on_bad_lines)
    rows = rows.select(
        pl.col("user_id").cast(pl.Int64).alias(S.USER),
        pl.col("item_id").cast(pl.Int64).alias(S.ITEM),
        pl.col("category_id").cast(pl.Int64).alias(S.CATEGORY),
        map_values(pl.col("behavior_type").str.to_lowercase(), TAOBAO_BEHAVIORS).alias(S.BEHAVIOR),
        pl.col("timestamp").cast(pl.Int64).alias(S.TS),
    )
    # An item can appear under several categories in the raw log (re-categorised
    # listings); keep the most frequent, and the smallest id on a tie so the
    # result does not depend on row order.
    items = (
        rows.group_by(S.ITEM, S.CATEGORY).len()
        .sort([S.ITEM, "len", S.CATEGORY], descending=[False, True, False])
        .unique(subset=S.ITEM, keep="first", maintain_order=True)
        .select(S.ITEM, S.CATEGORY)
    )
    return Plan(events=rows.select(S.USER, S.ITEM, S.BEHAVIOR, S.TS), items=items,
                files={"events": path, "items": path}, skipped=[s for s in (skipped,) if s])
