"""MovieLens (or any rating data) as RecBole atomic files: ``NAME.inter``, ``NAME.item``, ``NAME.user``."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import polars as pl

from recall import schema as S
from recall.errors import RecallError
from recall.importers.common import Thresholds, age_band, all_integral, id_cast, rating_events
from recall.importers.plan import Plan
from recall.importers.text import LINE, Skipped, check_lines, complete, numbers, read_text

RECBOLE_LAYOUT = (
    "a RecBole atomic file: tab-separated, with a typed header such as "
    "user_id:token, item_id:token, rating:float, timestamp:float"
)


def recbole_paths(path: Path) -> tuple[Path, Path | None, Path | None]:
    """The ``.inter`` file (``path`` or the one in folder ``path``) and its sibling ``.user`` / ``.item``."""
    if path.is_dir():
        inters = sorted(path.glob("*.inter"))
        if len(inters) > 1:
            raise RecallError(
                f"folder '{path}' holds several .inter files ({', '.join(p.name for p in inters)}); "
                "pass the one to import"
            )
        path = inters[0]
    elif path.suffix != ".inter":
        raise RecallError(f"'{path}' is not a '.inter' file; pass NAME.inter or the folder holding it")
    user, item = path.with_suffix(".user"), path.with_suffix(".item")
    return path, (user if user.is_file() else None), (item if item.is_file() else None)


def _read_recbole(path: Path, required: Sequence[str], on_bad_lines: str, skipped: list[Skipped],
                  numeric: Sequence[str] = (), filled: Sequence[str] = ()) -> pl.LazyFrame:
    """Check a RecBole atomic file: String columns, the ``:type`` header suffixes dropped.

    ``required`` columns must be present and filled; where present, ``numeric``
    ones must be numbers and ``filled`` ones filled.
    """
    # RecBole splits lines on tabs without any quoting, so neither do we: a
    # title may contain a double quote.
    table = read_text(path, path=path, sep="\t", layout=RECBOLE_LAYOUT, header=True)
    table = table.renamed({c: c.split(":", 1)[0].strip() for c in table.columns})
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise RecallError(
            f"column(s) {', '.join(repr(c) for c in missing)} missing from '{path}' "
            f"(found: {', '.join(table.columns)}); expected {RECBOLE_LAYOUT}"
        )
    present = [c for c in filled if c in table.columns]
    rows, dropped = check_lines(
        table, [*complete([*required, *present]), *numbers([c for c in numeric if c in table.columns])],
        on_bad_lines)
    skipped.extend(d for d in (dropped,) if d)
    return rows.drop(LINE)


def plan_recbole(path: Path, limits: Thresholds, on_bad_lines: str) -> Plan:
    """Ratings from ``.inter``, titles and genres from ``.item``, demographics from ``.user``.

    ``events``: behaviours from the ratings by :func:`~recall.importers.common.rating_events`,
    the ``rating`` kept as an extra column (implicit ``.inter`` files without a
    rating: every row is a click). ``items``: ``title``, ``release_year`` (Int64,
    null when not a number, e.g. 'unknown'), ``genres`` (List[str]) and
    ``category_id`` (first genre). ``users``: the attributes plus ``age_band``.
    Ids are Int64 when every id in every file is an integer, else String.
    """
    inter_path, user_path, item_path = recbole_paths(path)
    skipped: list[Skipped] = []
    inter = _read_recbole(inter_path, (S.USER, S.ITEM, "timestamp"), on_bad_lines, skipped,
                          numeric=("timestamp", "rating"), filled=("rating",))
    has_rating = "rating" in inter.collect_schema().names()
    items = _read_recbole(item_path, (S.ITEM,), on_bad_lines, skipped) if item_path else None
    users = _read_recbole(user_path, (S.USER,), on_bad_lines, skipped, numeric=("age",)) if user_path else None

    casts = {column: id_cast(column, all_integral([t for t in tables if t is not None], column))
             for column, tables in ((S.USER, (inter, users)), (S.ITEM, (inter, items)))}
    inter = inter.with_columns(casts[S.USER], casts[S.ITEM],
                               pl.col("timestamp").cast(pl.Float64).floor().cast(pl.Int64).alias(S.TS))
    if has_rating:
        events = rating_events(inter.select(S.USER, S.ITEM, S.TS, pl.col("rating").cast(pl.Float64)), limits)
    else:
        # Implicit-feedback .inter files have no rating: clicks only.
        events = inter.select(S.USER, S.ITEM, pl.lit("click").alias(S.BEHAVIOR), S.TS)
    plan = Plan(events=events, files={"events": inter_path}, skipped=skipped)
    if items is not None:
        plan.items, plan.files["items"] = _recbole_items(items.with_columns(casts[S.ITEM])), item_path
    if users is not None:
        plan.users, plan.files["users"] = _recbole_users(users.with_columns(casts[S.USER])), user_path
    return plan


def _recbole_items(items: pl.LazyFrame) -> pl.LazyFrame:
    columns = items.collect_schema().names()
    items = items.rename({"movie_title": "title"}, strict=False)
    if "release_year" in columns:
        # The real file has 'unkonwn' and 'V' for a few films: unknown year, not an error.
        items = items.with_columns(pl.col("release_year").cast(pl.Int64, strict=False))
    # ml-100k calls the genre list 'class', ml-1m 'genre'.
    genre_col = next((c for c in ("class", "genre", "genres") if c in columns), None)
    if genre_col is not None:
        items = items.with_columns(pl.col(genre_col).str.extract_all(r"\S+").alias("genres"))
        if genre_col != "genres":
            items = items.drop(genre_col)
        items = items.with_columns(pl.col("genres").list.first().alias(S.CATEGORY))
    return items


def _recbole_users(users: pl.LazyFrame) -> pl.LazyFrame:
    if "age" not in users.collect_schema().names():
        return users
    age = pl.col("age").cast(pl.Float64).cast(pl.Int64)
    return users.with_columns(age, age_band(age).alias("age_band"))
