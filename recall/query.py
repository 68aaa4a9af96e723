"""Reading published tables back: one user's candidates, one item's neighbours."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recall import schema as S
from recall.errors import RecallError
from recall.publish import resolve_run


def _typed(value: str, dtype: pl.DataType):
    """Convert a command-line id to the column's type (ids are Int64 or String)."""
    if dtype.is_integer():
        try:
            return int(value)
        except ValueError:
            raise RecallError(f"id '{value}' is not an integer, but the ids in this run are") from None
    return value


def user_candidates(root: Path, run_date: str | None, user: str, limit: int) -> pl.DataFrame:
    path = resolve_run(root, run_date) / "candidates.parquet"
    if not path.exists():
        raise RecallError(f"'{path}' does not exist; run 'recall merge' or 'recall run'")
    frame = pl.scan_parquet(path)
    key = _typed(user, frame.collect_schema()[S.USER])
    rows = frame.filter(pl.col(S.USER) == key).sort(S.RANK).head(limit).collect()
    if rows.height == 0:
        raise RecallError(f"user '{user}' has no candidates in '{path}'")
    return rows


def similar_items(root: Path, run_date: str | None, channel: str, item: str, limit: int) -> pl.DataFrame:
    path = resolve_run(root, run_date) / "i2i" / f"{channel}.parquet"
    if not path.exists():
        available = sorted(p.stem for p in path.parent.glob("*.parquet"))
        raise RecallError(f"no i2i table for channel '{channel}' in this run "
                          f"(available: {', '.join(available) or 'none'})")
    frame = pl.scan_parquet(path)
    key = _typed(item, frame.collect_schema()[S.ITEM])
    rows = frame.filter(pl.col(S.ITEM) == key).sort(S.RANK).head(limit).collect()
    if rows.height == 0:
        raise RecallError(f"item '{item}' has no neighbours in '{path}'")
    return rows
