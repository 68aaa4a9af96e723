"""Importers: turn public data sets and arbitrary event logs into a normalised :class:`Dataset`.

Each importer is a plain function ``(src, **options) -> Dataset`` listed in the
explicit registry :data:`IMPORTERS`, with a one-line description in
:data:`IMPORTER_HELP` for the CLI. Every table an importer returns has been run
through :func:`recall.io.normalise_events` / ``normalise_items`` /
``normalise_users`` with the path of the file it came from, so later errors
name the real source file.

Importers read text files with every column as a string and then parse the
columns themselves: that way a bad value is reported with its column and line
number instead of as a reader failure, and no polars exception reaches the user.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import logging
import math
from pathlib import Path
from typing import Any, Callable

import polars as pl

from recall import schema as S
from recall.errors import RecallError
from recall.io import (
    Dataset,
    check_id_types,
    normalise_events,
    normalise_items,
    normalise_users,
    read_table,
)

log = logging.getLogger("recall")

Importer = Callable[..., Dataset]

# Internal column holding the 1-based line number of each row in its file, so
# parse errors can point at the line to fix. The odd name avoids clashes.
_LINE = "__recall_line__"

# PanicException derives from BaseException, not PolarsError, so it is listed
# explicitly; UnicodeDecodeError is a ValueError.
_READ_ERRORS = (pl.exceptions.PolarsError, pl.exceptions.PanicException, OSError, ValueError)


# --------------------------------------------------------------------------- helpers


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _existing(src: str | Path, what: str) -> Path:
    """Return ``src`` as a Path, or raise if nothing is there."""
    path = Path(src)
    if not path.exists():
        raise RecallError(f"{what} '{path}' does not exist; check the path")
    return path


def _read_text(path: Path, *, separator: str, has_header: bool, quote_char: str | None,
               layout: str) -> pl.DataFrame:
    """Read a delimited text file with every column as String.

    Parameters
    ----------
    path
        The file to read.
    separator, has_header, quote_char
        Passed to :func:`polars.read_csv`.
    layout
        Human description of the expected layout, appended to error messages.

    Returns
    -------
    polars.DataFrame
        All columns String, plus :data:`_LINE` (1-based line number in the file).
    """
    try:
        df = pl.read_csv(
            path,
            separator=separator,
            has_header=has_header,
            quote_char=quote_char,
            # Strings only: numbers are parsed later, column by column, so a
            # bad value can be reported with its column and line.
            infer_schema=False,
            truncate_ragged_lines=False,
        )
    except pl.exceptions.NoDataError as exc:
        raise RecallError(f"'{path}' is empty; expected {layout}") from exc
    except _READ_ERRORS as exc:
        reason = _first_line(exc)
        if "more fields" in reason:
            raise RecallError(
                f"'{path}': some line has more fields than the first line; expected {layout} "
                "(check the separator and that no value contains it unquoted)"
            ) from exc
        raise RecallError(
            f"cannot read '{path}' ({reason}); expected a UTF-8 text file: {layout}"
        ) from exc
    first = 2 if has_header else 1
    df = df.with_row_index(_LINE, offset=first)
    data_cols = [c for c in df.columns if c != _LINE]
    # Surrounding spaces are never meaningful in these formats, and an
    # unstripped " 12" would not parse as a number.
    df = df.with_columns(pl.col(data_cols).str.strip_chars())
    # Blank lines (e.g. a trailing empty line) come back as all-null rows: skip them.
    return df.filter(~pl.all_horizontal(pl.col(data_cols).is_null()))


def _require_complete(df: pl.DataFrame, columns: list[str], path: Path) -> None:
    """Raise if any of ``columns`` is empty on some line, naming the first such line."""
    incomplete = df.filter(pl.any_horizontal(pl.col(columns).is_null()))
    if incomplete.height == 0:
        return
    row = incomplete.row(0, named=True)
    column = next(c for c in columns if row[c] is None)
    raise RecallError(
        f"'{path}' line {row[_LINE]}: column '{column}' is empty or missing "
        f"({incomplete.height} incomplete line(s) in total); fill or remove those lines"
    )


def _parse_number(df: pl.DataFrame, column: str, dtype: pl.DataType, path: Path) -> pl.DataFrame:
    """Parse a String column as ``dtype`` (Int64 or Float64), raising on the first bad value.

    Nulls stay null (callers check completeness separately); NaN and infinity
    count as bad values for floats because no field here can use them.
    """
    parsed = pl.col(column).cast(dtype, strict=False)
    bad_value = parsed.is_null()
    if dtype.is_float():
        bad_value = bad_value | ~parsed.is_finite()
    bad = df.filter(pl.col(column).is_not_null() & bad_value)
    if bad.height:
        row = bad.row(0, named=True)
        kind = "integers" if dtype.is_integer() else "numbers"
        raise RecallError(
            f"column '{column}' in '{path}' must hold {kind}, but line {row[_LINE]} has "
            f"{row[column]!r} ({bad.height} bad value(s) in total); fix or remove those lines"
        )
    return df.with_columns(parsed)


def _all_integral(values: list[pl.Series]) -> bool:
    """True if every non-null string in every series parses as an integer."""
    return all(s.cast(pl.Int64, strict=False).null_count() == s.null_count() for s in values)


def _strip_types(columns: list[str]) -> dict[str, str]:
    """Map RecBole header names ``name:type`` to ``name``."""
    return {c: c.split(":", 1)[0].strip() for c in columns}


# --------------------------------------------------------------------------- taobao

TAOBAO_FILE = "UserBehavior.csv"
TAOBAO_COLUMNS = ("user_id", "item_id", "category_id", "behavior_type", "timestamp")
# Page views are the click of this log; the other three already use our names.
TAOBAO_BEHAVIORS = {"pv": "click", "fav": "fav", "cart": "cart", "buy": "buy"}


def _taobao_path(src: str | Path) -> Path:
    path = _existing(src, "Taobao source")
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


def _drop_taobao_header(raw: pl.DataFrame, path: Path) -> pl.DataFrame:
    """Detect and drop an optional header line; honour its column order if it names ours.

    The first line is a header when none of its fields is an integer: a data
    line always has four integer fields, so a corrupt data line is still
    reported as such rather than swallowed as a header.
    """
    first = raw.head(1)
    parses = first.select(pl.col(list(TAOBAO_COLUMNS)).cast(pl.Int64, strict=False).is_not_null())
    if any(parses.row(0)):
        return raw
    names = [str(first[c][0]).lower() for c in TAOBAO_COLUMNS]
    body = raw.slice(1)
    if sorted(names) == sorted(TAOBAO_COLUMNS) and names != list(TAOBAO_COLUMNS):
        # A header that names our columns in another order: trust the names.
        body = body.rename(dict(zip(TAOBAO_COLUMNS, names))).select(list(TAOBAO_COLUMNS) + [_LINE])
    if body.height == 0:
        raise RecallError(f"'{path}' has a header line but no data lines")
    return body


def import_taobao(src: str | Path) -> Dataset:
    """Import the Taobao UserBehavior log (Alibaba Tianchi).

    Parameters
    ----------
    src
        ``UserBehavior.csv`` or a folder containing it. Comma-separated, five
        columns ``user_id,item_id,category_id,behavior_type,timestamp`` (epoch
        seconds); no header in the original, but a header line is detected and
        skipped (and if it names these five columns in another order, the
        names are used).

    Returns
    -------
    Dataset
        ``events`` with ``pv`` mapped to ``click`` (``fav``, ``cart``, ``buy``
        unchanged) and ``items`` with one ``category_id`` per item: the most
        frequent one in the log, ties broken by the smallest id.
    """
    path = _taobao_path(src)
    layout = "5 comma-separated columns " + ",".join(TAOBAO_COLUMNS)
    raw = _read_text(path, separator=",", has_header=False, quote_char='"', layout=layout)
    if raw.height == 0:
        raise RecallError(f"'{path}' has no data lines; expected {layout}")
    fields = [c for c in raw.columns if c != _LINE]
    width = len(fields)
    if width != len(TAOBAO_COLUMNS):
        raise RecallError(
            f"'{path}' has {width} comma-separated column(s) per line but the Taobao "
            f"UserBehavior format has {len(TAOBAO_COLUMNS)}: {','.join(TAOBAO_COLUMNS)}; "
            "check the file, or import it with the 'generic' importer and a column mapping"
        )
    raw = raw.rename(dict(zip(fields, TAOBAO_COLUMNS)))
    raw = _drop_taobao_header(raw, path)
    _require_complete(raw, list(TAOBAO_COLUMNS), path)
    for column in ("user_id", "item_id", "category_id", "timestamp"):
        raw = _parse_number(raw, column, pl.Int64, path)

    behavior = pl.col("behavior_type").str.to_lowercase()
    unknown = raw.filter(~behavior.is_in(list(TAOBAO_BEHAVIORS)))
    if unknown.height:
        values = unknown["behavior_type"].unique().sort().head(5).to_list()
        raise RecallError(
            f"column 'behavior_type' in '{path}' has unknown value(s) {values} "
            f"(first on line {unknown[_LINE][0]}); the Taobao format allows "
            f"{', '.join(TAOBAO_BEHAVIORS)}; use the 'generic' importer with behavior_map "
            "for other logs"
        )
    raw = raw.with_columns(behavior.replace_strict(TAOBAO_BEHAVIORS).alias(S.BEHAVIOR))

    events = raw.select(
        pl.col("user_id").alias(S.USER),
        pl.col("item_id").alias(S.ITEM),
        S.BEHAVIOR,
        pl.col("timestamp").alias(S.TS),
    )
    # An item can appear under several categories in the raw log (re-categorised
    # listings); keep the most frequent, and the smallest id on a tie so the
    # result does not depend on row order.
    items = (
        raw.group_by("item_id", "category_id")
        .len()
        .sort(["item_id", "len", "category_id"], descending=[False, True, False])
        .unique(subset="item_id", keep="first", maintain_order=True)
        .select(pl.col("item_id").alias(S.ITEM), pl.col("category_id").alias(S.CATEGORY))
    )
    data = Dataset(
        events=normalise_events(events, path),
        items=normalise_items(items, path),
        files={"events": path, "items": path},
    )
    check_id_types(data)
    return data


# --------------------------------------------------------------------------- movielens

RECBOLE_LAYOUT = (
    "a RecBole atomic file: tab-separated, with a typed header such as "
    "user_id:token, item_id:token, rating:float, timestamp:float"
)
# Bands of the MovieLens 1M age codes (1, 18, 25, 35, 45, 50, 56) extended to
# raw ages, so both data sets get the same labels.
AGE_BANDS = ((18, "<18"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (55, "45-54"))
AGE_OPEN_BAND = "55+"


def _recbole_paths(src: str | Path) -> tuple[Path, Path | None, Path | None]:
    """Return the ``.inter`` file and the sibling ``.user`` / ``.item`` files if present."""
    path = _existing(src, "MovieLens source")
    if path.is_dir():
        inters = sorted(path.glob("*.inter"))
        if not inters:
            raise RecallError(
                f"no '.inter' file in folder '{path}'; pass a folder with NAME.inter "
                "(RecBole atomic files) or the .inter file itself"
            )
        if len(inters) > 1:
            raise RecallError(
                f"folder '{path}' holds several .inter files ({', '.join(p.name for p in inters)}); "
                "pass the one to import"
            )
        path = inters[0]
    elif path.suffix != ".inter":
        raise RecallError(
            f"'{path}' is not a '.inter' file; pass NAME.inter or the folder holding it"
        )
    user, item = path.with_suffix(".user"), path.with_suffix(".item")
    return path, (user if user.is_file() else None), (item if item.is_file() else None)


def _read_recbole(path: Path, required: tuple[str, ...]) -> pl.DataFrame:
    """Read a RecBole atomic file as strings, with the ``:type`` suffixes stripped."""
    # RecBole splits lines on tabs without any quoting, so neither do we: a
    # title may contain a double quote.
    df = _read_text(path, separator="\t", has_header=True, quote_char=None, layout=RECBOLE_LAYOUT)
    df = df.rename(_strip_types([c for c in df.columns if c != _LINE]))
    missing = [c for c in required if c not in df.columns]
    if missing:
        found = [c for c in df.columns if c != _LINE]
        raise RecallError(
            f"column(s) {', '.join(repr(c) for c in missing)} missing from '{path}' "
            f"(found: {', '.join(found)}); expected {RECBOLE_LAYOUT}"
        )
    _require_complete(df, list(required), path)
    return df


def _ints_if_integral(column: str, inter: pl.DataFrame, side: pl.DataFrame | None
                      ) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """Cast id ``column`` to Int64 in both tables if every id in both is an integer.

    The type is decided over events and side table together: if they
    disagreed, joins on the id would silently match nothing.
    """
    tables = [t for t in (inter, side) if t is not None]
    if not _all_integral([t[column] for t in tables]):
        return inter, side
    as_int = pl.col(column).cast(pl.Int64)
    return inter.with_columns(as_int), (None if side is None else side.with_columns(as_int))


def _age_band(age: pl.Expr) -> pl.Expr:
    expr = pl.when(age.is_null()).then(pl.lit(None, dtype=pl.String))
    for upper, label in AGE_BANDS:
        expr = expr.when(age < upper).then(pl.lit(label))
    return expr.otherwise(pl.lit(AGE_OPEN_BAND))


def import_movielens(src: str | Path, *, fav_threshold: float = 4) -> Dataset:
    """Import MovieLens (or any RecBole rating data) from RecBole atomic files.

    Parameters
    ----------
    src
        A folder holding ``NAME.inter`` and optionally ``NAME.user`` and
        ``NAME.item``, or the ``.inter`` file itself. Tab-separated with typed
        headers (``user_id:token``); the ``:type`` suffix is dropped.
    fav_threshold
        A rating at or above this value also yields a ``fav`` event.

    Returns
    -------
    Dataset
        ``events``: every rating is a ``click`` at its timestamp, and ratings
        ``>= fav_threshold`` are also a ``fav`` at the same timestamp; the
        ``rating`` is kept as an extra column. ``items`` (from ``.item``):
        ``title``, ``release_year`` (Int64, null when not a number, e.g.
        'unknown'), ``genres`` (List[str]) and ``category_id`` (first genre).
        ``users`` (from ``.user``): the attributes plus ``age_band``.
        Ids are Int64 when every id in every file is an integer, else String.
    """
    try:
        threshold = float(fav_threshold)
    except (TypeError, ValueError):
        threshold = math.nan
    if not math.isfinite(threshold):
        raise RecallError(f"fav_threshold must be a number, e.g. 4, not {fav_threshold!r}")
    inter_path, user_path, item_path = _recbole_paths(src)

    inter = _read_recbole(inter_path, (S.USER, S.ITEM, "timestamp"))
    items = _read_recbole(item_path, (S.ITEM,)) if item_path else None
    users = _read_recbole(user_path, (S.USER,)) if user_path else None

    inter, users = _ints_if_integral(S.USER, inter, users)
    inter, items = _ints_if_integral(S.ITEM, inter, items)

    inter = _parse_number(inter, "timestamp", pl.Float64, inter_path)
    inter = inter.with_columns(pl.col("timestamp").floor().cast(pl.Int64).alias(S.TS))
    if "rating" in inter.columns:
        _require_complete(inter, ["rating"], inter_path)
        inter = _parse_number(inter, "rating", pl.Float64, inter_path)
        base = inter.select(S.USER, S.ITEM, S.TS, "rating")
        favs = base.filter(pl.col("rating") >= threshold)
    else:
        # Implicit-feedback .inter files have no rating: clicks only.
        base = inter.select(S.USER, S.ITEM, S.TS)
        favs = base.clear()
    events = (
        pl.concat([base.with_columns(pl.lit("click").alias(S.BEHAVIOR)),
                   favs.with_columns(pl.lit("fav").alias(S.BEHAVIOR))])
        # Chronological like a real log; stable, so a fav follows its click.
        .sort(S.TS, maintain_order=True)
    )
    files = {"events": inter_path}
    data = Dataset(events=normalise_events(events, inter_path), files=files)

    if items is not None:
        items = items.rename({"movie_title": "title"}, strict=False)
        if "release_year" in items.columns:
            # The real file has 'unkonwn' and 'V' for a few films: unknown year, not an error.
            items = items.with_columns(pl.col("release_year").cast(pl.Int64, strict=False))
        # ml-100k calls the genre list 'class', ml-1m 'genre'.
        genre_col = next((c for c in ("class", "genre", "genres") if c in items.columns), None)
        if genre_col is not None:
            items = items.with_columns(
                pl.col(genre_col).str.extract_all(r"\S+").alias("genres")
            )
            if genre_col != "genres":
                items = items.drop(genre_col)
            items = items.with_columns(pl.col("genres").list.first().alias(S.CATEGORY))
        data.items = normalise_items(items.drop(_LINE), item_path)
        files["items"] = item_path

    if users is not None:
        if "age" in users.columns:
            users = _parse_number(users, "age", pl.Float64, user_path)
            users = users.with_columns(pl.col("age").cast(pl.Int64))
            users = users.with_columns(_age_band(pl.col("age")).alias("age_band"))
        data.users = normalise_users(users.drop(_LINE), user_path)
        files["users"] = user_path

    check_id_types(data)
    return data


# --------------------------------------------------------------------------- generic

TS_UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def _side_table(src: str | Path, id_col: str, target: str, option: str) -> tuple[pl.DataFrame, Path]:
    """Read an items/users table and rename its id column to ``target``."""
    path = _existing(src, f"{option} file")
    table = read_table(path)
    if id_col in table.columns and id_col != target:
        # The mapped column wins over a same-named column that is not the id.
        table = table.drop(target, strict=False).rename({id_col: target})
    return table, path


def import_generic(
    src: str | Path,
    *,
    user_col: str = S.USER,
    item_col: str = S.ITEM,
    ts_col: str = S.TS,
    behavior_col: str | None = None,
    behavior_map: dict[Any, str] | None = None,
    ts_unit: str = "s",
    items_src: str | Path | None = None,
    users_src: str | Path | None = None,
) -> Dataset:
    """Import any CSV or Parquet event log through a column mapping.

    Parameters
    ----------
    src
        The events file (``.csv`` or ``.parquet``).
    user_col, item_col, ts_col
        Source columns holding the user id, item id and timestamp.
    behavior_col
        Source column holding the behaviour. If not given, a column named
        ``behavior`` is used when there is one; otherwise every row is a ``click``.
    behavior_map
        Source value -> one of :data:`recall.schema.BEHAVIORS`, e.g.
        ``{"pv": "click", "view": "click"}``. Keys are compared as strings,
        so ``{1: "click"}`` works for numeric codes. Unmapped values must
        already be valid behaviours.
    ts_unit
        Unit of a numeric timestamp: ``"s"``, ``"ms"``, ``"us"`` or ``"ns"``;
        converted to whole seconds (rounded down). Datetime or ISO-string
        timestamps ignore it.
    items_src, users_src
        Optional item / user tables (CSV or Parquet); their ``item_col`` /
        ``user_col`` column is renamed to ``item_id`` / ``user_id``.

    Returns
    -------
    Dataset
        Normalised events; extra source columns are kept.
    """
    path = _existing(src, "events file")
    if path.is_dir():
        raise RecallError(f"'{path}' is a folder; pass the events file (.csv or .parquet) itself")
    if ts_unit not in TS_UNITS:
        raise RecallError(f"ts_unit must be one of {', '.join(TS_UNITS)}, not {ts_unit!r}")
    behavior_map = {str(k): v for k, v in (behavior_map or {}).items()}
    bad_targets = {k: v for k, v in behavior_map.items() if v not in S.BEHAVIORS}
    if bad_targets:
        raise RecallError(
            f"behavior_map maps to unknown behaviour(s) {bad_targets}; map each value to one of "
            f"{', '.join(S.BEHAVIORS)}"
        )

    df = read_table(path)
    if behavior_col is None and S.BEHAVIOR in df.columns:
        behavior_col = S.BEHAVIOR
    if behavior_col is None and behavior_map:
        raise RecallError(
            f"behavior_map was given but '{path}' has no behaviour column; pass behavior_col=NAME "
            f"(columns: {', '.join(df.columns)})"
        )
    mapping = {user_col: S.USER, item_col: S.ITEM, ts_col: S.TS}
    options = {user_col: "user_col", item_col: "item_col", ts_col: "ts_col"}
    if behavior_col is not None:
        mapping[behavior_col] = S.BEHAVIOR
        options[behavior_col] = "behavior_col"
    if len(mapping) < (4 if behavior_col is not None else 3):
        raise RecallError(
            f"user_col, item_col, ts_col and behavior_col must name different columns "
            f"(got user_col={user_col!r}, item_col={item_col!r}, ts_col={ts_col!r}, "
            f"behavior_col={behavior_col!r})"
        )
    for column, option in options.items():
        if column not in df.columns:
            close = difflib.get_close_matches(column, df.columns, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise RecallError(
                f"column {column!r} ({option}) not in '{path}'{hint}; columns there: "
                f"{', '.join(df.columns)}; pass {option}=NAME"
            )
        nulls = df[column].null_count()
        if nulls:
            raise RecallError(
                f"column {column!r} ({option}) in '{path}' has {nulls} empty value(s); "
                "drop or fill those rows"
            )

    # Columns already called user_id/item_id/ts/behavior but not mapped would
    # collide with the renamed ones; the mapping says which one the user means.
    shadowed = [c for c in df.columns if c in mapping.values() and c not in mapping]
    if shadowed:
        log.warning("'%s': ignoring column(s) %s in favour of the mapped ones", path, shadowed)
    df = df.drop(shadowed).rename(mapping)

    if behavior_col is None:
        df = df.with_columns(pl.lit("click").alias(S.BEHAVIOR))
    else:
        dtype = df.schema[S.BEHAVIOR]
        if not (dtype in (pl.String, pl.Categorical, pl.Boolean) or dtype.is_integer()
                or isinstance(dtype, pl.Enum)):
            raise RecallError(
                f"column {behavior_col!r} (behavior_col) in '{path}' has dtype {dtype}; "
                "use strings or integer codes with behavior_map"
            )
        behavior = pl.col(S.BEHAVIOR).cast(pl.String)
        df = df.with_columns(behavior.replace(behavior_map) if behavior_map else behavior)
        unknown = (
            df.filter(~pl.col(S.BEHAVIOR).is_in(list(S.BEHAVIORS)))
            .group_by(S.BEHAVIOR).len()
            .sort(["len", S.BEHAVIOR], descending=[True, False])
        )
        if unknown.height:
            shown = ", ".join(f"{v!r} ({n} rows)" for v, n in unknown.head(10).iter_rows())
            example = unknown[S.BEHAVIOR][0]
            raise RecallError(
                f"column {behavior_col!r} (behavior_col) in '{path}' has value(s) that are not "
                f"behaviours{' after behavior_map' if behavior_map else ''}: {shown}; allowed: "
                f"{', '.join(S.BEHAVIORS)}; map them with behavior_map, "
                f"e.g. behavior_map={{{example!r}: 'click'}}"
            )

    ts_dtype = df.schema[S.TS]
    if ts_dtype.is_numeric():
        ts_max = df[S.TS].max()
        if ts_unit == "s" and ts_max is not None and ts_max >= S.MAX_EPOCH_SECONDS:
            guess = "ms" if ts_max < 1e14 else "us" if ts_max < 1e17 else "ns"
            raise RecallError(
                f"column {ts_col!r} (ts_col) in '{path}' looks like {guess}, not seconds "
                f"(max {ts_max}); pass ts_unit={guess!r}"
            )
        factor = TS_UNITS[ts_unit]
        if factor != 1:
            seconds = (pl.col(S.TS) // factor if ts_dtype.is_integer()
                       else (pl.col(S.TS) / factor).floor())
            df = df.with_columns(seconds)

    files = {"events": path}
    data = Dataset(events=normalise_events(df, path), files=files)
    if items_src is not None:
        table, items_path = _side_table(items_src, item_col, S.ITEM, "items_src")
        data.items, files["items"] = normalise_items(table, items_path), items_path
    if users_src is not None:
        table, users_path = _side_table(users_src, user_col, S.USER, "users_src")
        data.users, files["users"] = normalise_users(table, users_path), users_path
    check_id_types(data)
    return data


# --------------------------------------------------------------------------- registry


def _guarded(importer: Importer) -> Importer:
    """Safety net: a polars error the importer did not anticipate still becomes a RecallError."""

    @functools.wraps(importer)
    def run(src: str | Path, **options: Any) -> Dataset:
        try:
            return importer(src, **options)
        except _READ_ERRORS as exc:
            raise RecallError(
                f"cannot import '{src}' ({_first_line(exc)}); check that the file matches the "
                "expected format"
            ) from exc

    return run


IMPORTERS: dict[str, Importer] = {
    "taobao": _guarded(import_taobao),
    "movielens": _guarded(import_movielens),
    "generic": _guarded(import_generic),
}

IMPORTER_HELP: dict[str, str] = {
    "taobao": "Taobao UserBehavior.csv (Tianchi): pv->click, fav, cart, buy; item categories.",
    "movielens": "MovieLens as RecBole atomic files (.inter/.user/.item): ratings -> click, "
                 "rating >= fav_threshold also fav.",
    "generic": "Any CSV/Parquet event log via user_col, item_col, ts_col, behavior_col, "
               "behavior_map, ts_unit.",
}


def importer_options(name: str) -> list[str]:
    """Keyword options the importer ``name`` accepts (for CLI help and validation)."""
    signature = inspect.signature(get_importer(name))
    return [p.name for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY]


def get_importer(name: str) -> Importer:
    """Look up an importer, with a did-you-mean hint for unknown names."""
    if name in IMPORTERS:
        return IMPORTERS[name]
    close = difflib.get_close_matches(name, IMPORTERS, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise RecallError(f"unknown importer '{name}'{hint}; available: {', '.join(IMPORTERS)}")


def run_importer(name: str, src: str | Path, **options: Any) -> Dataset:
    """Run importer ``name`` on ``src``, rejecting options it does not take."""
    importer = get_importer(name)
    allowed = importer_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise RecallError(
            f"importer '{name}' does not take option(s) {', '.join(unknown)}; "
            f"its options: {', '.join(allowed) or 'none'}"
        )
    return importer(Path(src), **options)
