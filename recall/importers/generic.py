"""Any CSV or Parquet event log, through a column mapping (``recall data import generic``).

The importer works in four steps, each a function below:

1. :func:`_open` scans the file lazily (CSV: separator sniffed unless given,
   UTF-8 byte-order mark dropped, quoted fields; Parquet: typed columns);
2. :func:`_profile` decides, in one streaming pass over the whole file, the type
   of every column: ids are integers only if every id is, timestamps are
   numbers or datetimes by majority, other columns the narrowest type all their
   values fit (so a late ``N/A`` makes a column text, never a bad line);
3. :func:`check_lines` refuses or skips lines with a missing key or a value that
   does not parse as its column's type;
4. the typed columns are mapped to the contract: behaviours (a behaviour column
   with ``behavior_map``, ratings through thresholds, or every row a click),
   timestamps to epoch seconds, list columns split.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import polars as pl

from recall import schema as S
from recall.errors import RecallError
from recall.importers.common import Thresholds, map_values, rating_events, thresholds
from recall.importers.plan import Plan
from recall.importers.text import (
    LINE,
    Rule,
    Skipped,
    TextTable,
    check_lines,
    check_on_bad_lines,
    collect,
    complete,
    existing,
    frame_table,
    head_lines,
    numbers,
    read_text,
    sniff_separator,
)

log = logging.getLogger("recall")

TS_UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
SEP_ALIASES = {"\\t": "\t", "tab": "\t", "TAB": "\t"}
SUFFIXES = (".csv", ".parquet")
INT, FLOAT, TEXT, DATETIME, NATIVE = "int", "float", "text", "datetime", "native"


@dataclass(frozen=True)
class Options:
    """The validated options of one generic import."""

    columns: dict[str, str]  # source column -> contract name (user_id, item_id, ts, behavior)
    behavior_map: dict[str, str]
    rating_col: str | None
    limits: Thresholds | None
    ts_unit: str
    list_cols: tuple[str, ...]
    list_sep: str
    sep: str | None
    on_bad_lines: str


def _parse_options(user_col: str, item_col: str, ts_col: str, behavior_col: str | None,
                   behavior_map: dict | None, rating_col: str | None, click_threshold: Any,
                   fav_threshold: Any, ts_unit: str, list_cols: Any, list_sep: str, sep: str | None,
                   on_bad_lines: str) -> Options:
    if ts_unit not in TS_UNITS:
        raise RecallError(f"ts_unit must be one of {', '.join(TS_UNITS)}, not {ts_unit!r}")
    behavior_map = {str(k): v for k, v in (behavior_map or {}).items()}
    bad_targets = {k: v for k, v in behavior_map.items() if v not in S.BEHAVIORS}
    if bad_targets:
        raise RecallError(f"behavior_map maps to unknown behaviour(s) {bad_targets}; map each value to one "
                          f"of {', '.join(S.BEHAVIORS)}")
    if rating_col is not None and (behavior_col is not None or behavior_map):
        raise RecallError("rating_col derives the behaviours from ratings; drop behavior_col and "
                          "behavior_map, or drop rating_col")
    if rating_col is None and (click_threshold is not None or fav_threshold is not None):
        raise RecallError("click_threshold and fav_threshold apply to ratings; pass rating_col=NAME too")
    columns = {user_col: S.USER, item_col: S.ITEM, ts_col: S.TS}
    if behavior_col is not None:
        columns[behavior_col] = S.BEHAVIOR
    if rating_col is not None:
        columns[rating_col] = "rating"
    if len(columns) < 3 + (behavior_col is not None) + (rating_col is not None):
        raise RecallError(
            f"user_col, item_col, ts_col, behavior_col and rating_col must name different columns "
            f"(got user_col={user_col!r}, item_col={item_col!r}, ts_col={ts_col!r}, "
            f"behavior_col={behavior_col!r}, rating_col={rating_col!r})"
        )
    if isinstance(list_cols, str):
        list_cols = [c.strip() for c in list_cols.split(",") if c.strip()]
    if sep is not None:
        sep = SEP_ALIASES.get(sep, sep)
        if not isinstance(sep, str) or not sep or sep in "\"\n\r":
            raise RecallError(f"sep must be the field separator, e.g. ';' or tab, not {sep!r}")
    if not isinstance(list_sep, str) or not list_sep:
        raise RecallError(f"list_sep must be the separator inside list values, e.g. '|', not {list_sep!r}")
    return Options(
        columns=columns, behavior_map=behavior_map, rating_col=rating_col,
        limits=None if rating_col is None else thresholds(click_threshold, fav_threshold),
        ts_unit=ts_unit, list_cols=tuple(list_cols or ()), list_sep=list_sep, sep=sep,
        on_bad_lines=check_on_bad_lines(on_bad_lines),
    )


# --------------------------------------------------------------------------- reading


def _open(path: Path, sep: str | None, what: str) -> TextTable:
    """Scan a CSV (strings, quoted fields) or Parquet (typed) file lazily."""
    if path.is_dir():
        raise RecallError(f"'{path}' is a folder; pass the {what} (.csv or .parquet) itself")
    if path.suffix not in SUFFIXES:
        raise RecallError(f"'{path}': unsupported file type '{path.suffix}'; use .parquet or .csv")
    if path.suffix == ".parquet":
        try:
            frame = pl.scan_parquet(path, glob=False)
            frame.collect_schema()
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise RecallError(f"cannot read '{path}' ({exc.__class__.__name__}); check that it is a valid "
                              "parquet file, e.g. re-export it") from exc
        return frame_table(frame, path, f"a Parquet {what}")
    layout = f"a CSV {what} with a header line"
    lines = head_lines(path, path)
    if not lines:
        raise RecallError(f"'{path}' is empty; expected {layout}")
    separator = sep or sniff_separator(lines, path)
    return read_text(path, path=path, sep=separator, layout=layout, header=True,
                     quoted=len(separator) == 1)


def _mapped_columns(table: TextTable, options: Options) -> dict[str, str]:
    """Check the mapped columns exist; return the mapping with the behaviour column resolved."""
    columns = dict(options.columns)
    if S.BEHAVIOR not in columns.values() and options.rating_col is None and S.BEHAVIOR in table.columns:
        columns[S.BEHAVIOR] = S.BEHAVIOR  # a column already called 'behavior' is used
    if options.behavior_map and S.BEHAVIOR not in columns.values():
        raise RecallError(f"behavior_map was given but '{table.path}' has no behaviour column; pass "
                          f"behavior_col=NAME (columns: {', '.join(table.columns)})")
    option_names = {S.USER: "user_col", S.ITEM: "item_col", S.TS: "ts_col", S.BEHAVIOR: "behavior_col",
                    "rating": "rating_col"}
    for column, target in columns.items():
        if column not in table.columns:
            option = option_names[target]
            close = difflib.get_close_matches(column, table.columns, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise RecallError(f"column {column!r} ({option}) not in '{table.path}'{hint}; columns there: "
                              f"{', '.join(table.columns)}; pass {option}=NAME")
    return columns


# --------------------------------------------------------------------------- types


def _profile(table: TextTable, ts_col: str | None, keep_text: Sequence[str], ids: Sequence[str]) -> dict[str, str]:
    """The type of every column, from one streaming pass over the whole file.

    ``int`` / ``float`` when every value of the column parses so, else ``text``.
    The timestamp column is ``int`` if every value is, else ``float`` or
    ``datetime`` by majority (values of the other kind are then bad lines). Ids
    are ``int`` or ``text``, never ``float``.
    Typed (Parquet) columns keep their type; a timestamp there may also be
    ``native`` (a datetime column).
    """
    if table.unit == "row":
        return _parquet_kinds(table, ts_col)
    exprs = []
    for i, c in enumerate(table.columns):
        value = pl.col(c)
        exprs += [value.is_not_null().sum().alias(f"n{i}"),
                  value.cast(pl.Int64, strict=False).is_not_null().sum().alias(f"int{i}"),
                  value.cast(pl.Float64, strict=False).is_not_null().sum().alias(f"float{i}")]
    stats = collect(table.frame.select(exprs), table).row(0, named=True)
    kinds = {}
    for i, c in enumerate(table.columns):
        n, ints, floats = stats[f"n{i}"], stats[f"int{i}"], stats[f"float{i}"]
        if c in keep_text or n == 0:
            kinds[c] = TEXT
        elif ints == n:
            kinds[c] = INT
        elif c == ts_col:
            kinds[c] = FLOAT if 2 * floats >= n else DATETIME
        elif c in ids:
            kinds[c] = TEXT
        else:
            kinds[c] = FLOAT if floats == n else TEXT
    return kinds


def _parquet_kinds(table: TextTable, ts_col: str | None) -> dict[str, str]:
    schema = table.frame.collect_schema()
    kinds = {}
    for c in table.columns:
        dtype = schema[c]
        kinds[c] = INT if dtype.is_integer() else FLOAT if dtype.is_float() else TEXT
        if c == ts_col and kinds[c] == TEXT:
            kinds[c] = DATETIME if dtype == pl.String else NATIVE
    return kinds


def _datetime_seconds(column: str) -> pl.Expr:
    return pl.col(column).str.to_datetime(strict=False, time_zone="UTC").dt.epoch("s")


def _ts_rule(ts_col: str, kind: str) -> list[Rule]:
    if kind == NATIVE:  # a datetime column: nothing to parse
        return []
    if kind != DATETIME:
        return numbers([ts_col])
    fails = pl.col(ts_col).is_not_null() & _datetime_seconds(ts_col).is_null()
    return [Rule(fails, ts_col, f"column '{ts_col}' is not a datetime",
                 lambda f: (f"column '{ts_col}' (ts_col) in '{f.path}' must hold epoch numbers or datetimes "
                            f"(ISO 8601), but {f.unit} {f.line} has {f.value!r} ({f.count} in total); fix or "
                            "remove them, or pass -o on_bad_lines=skip to drop them"))]


def _typed(frame: pl.LazyFrame, kinds: dict[str, str], table: TextTable) -> pl.LazyFrame:
    """Cast the String columns of a checked text table to their profiled kinds."""
    if table.unit == "row":
        return frame
    casts = [pl.col(c).cast(pl.Int64 if kind == INT else pl.Float64)
             for c, kind in kinds.items() if kind in (INT, FLOAT)]
    return frame.with_columns(casts)


def _split_lists(frame: pl.LazyFrame, columns: Sequence[str], sep: str) -> pl.LazyFrame:
    """Text columns holding ``a|b|c`` as List[String] (items stripped, empty ones dropped).

    A column that already is a list (from Parquet) is left as it is.
    """
    schema = frame.collect_schema()
    present = [c for c in columns if c in schema and not isinstance(schema[c], pl.List)]
    if not present:
        return frame
    items = pl.element().str.strip_chars()
    return frame.with_columns(
        pl.col(c).cast(pl.String).str.split(sep).list.eval(items.filter(items.str.len_bytes() > 0))
        for c in present)


# --------------------------------------------------------------------------- mapping to the contract


def _timestamps(rows: pl.LazyFrame, kind: str, options: Options, ts_col: str, table: TextTable) -> pl.LazyFrame:
    """``ts`` as epoch seconds: datetimes parsed, numbers divided by the unit (rounded down)."""
    if kind == DATETIME:
        return rows.with_columns(_datetime_seconds(S.TS))
    if kind not in (INT, FLOAT):
        return rows  # a datetime column: normalise_events converts it
    if options.ts_unit == "s":
        ts_max = collect(rows.select(pl.col(S.TS).max()), table).item()
        if ts_max is not None and ts_max >= S.MAX_EPOCH_SECONDS:
            guess = "ms" if ts_max < 1e14 else "us" if ts_max < 1e17 else "ns"
            raise RecallError(f"column {ts_col!r} (ts_col) in '{table.path}' looks like {guess}, not seconds "
                              f"(max {ts_max}); pass ts_unit={guess!r}")
    factor = TS_UNITS[options.ts_unit]
    if factor == 1:
        return rows
    seconds = pl.col(S.TS) // factor if kind == INT else (pl.col(S.TS) / factor).floor()
    return rows.with_columns(seconds)


def _behaviors(rows: pl.LazyFrame, options: Options, source_col: str | None, table: TextTable) -> pl.LazyFrame:
    """The behaviour of each event: from ratings, from a behaviour column, or ``click``."""
    if options.limits is not None:
        return rating_events(rows.with_columns(pl.col("rating").cast(pl.Float64)), options.limits)
    if source_col is None:
        return rows.with_columns(pl.lit("click").alias(S.BEHAVIOR))
    dtype = rows.collect_schema()[S.BEHAVIOR]
    if not (dtype in (pl.String, pl.Categorical, pl.Boolean) or dtype.is_integer() or isinstance(dtype, pl.Enum)):
        raise RecallError(f"column {source_col!r} (behavior_col) in '{table.path}' has dtype {dtype}; "
                          "use strings or integer codes with behavior_map")
    rows = rows.with_columns(map_values(pl.col(S.BEHAVIOR).cast(pl.String), options.behavior_map).alias(S.BEHAVIOR))
    unknown = collect(rows.filter(~pl.col(S.BEHAVIOR).is_in(list(S.BEHAVIORS))).group_by(S.BEHAVIOR).len()
                      .sort(["len", S.BEHAVIOR], descending=[True, False]), table)
    if unknown.height:
        shown = ", ".join(f"{v!r} ({n} rows)" for v, n in unknown.head(10).iter_rows())
        raise RecallError(
            f"column {source_col!r} (behavior_col) in '{table.path}' has value(s) that are not behaviours"
            f"{' after behavior_map' if options.behavior_map else ''}: {shown}; allowed: {', '.join(S.BEHAVIORS)}; "
            f"map them with behavior_map, e.g. behavior_map={{{unknown[S.BEHAVIOR][0]!r}: 'click'}}"
        )
    return rows


def _events(path: Path, options: Options, skipped: list[Skipped]) -> tuple[pl.LazyFrame, dict[str, str]]:
    """The checked, typed events with contract names; and the profiled kinds by contract name."""
    table = _open(path, options.sep, "events file")
    columns = _mapped_columns(table, options)
    source = {target: column for column, target in columns.items()}
    kinds = _profile(table, source[S.TS], keep_text=[c for c, t in columns.items() if t == S.BEHAVIOR]
                     + list(options.list_cols), ids=[source[S.USER], source[S.ITEM]])
    rules = [*complete(list(columns)), *_ts_rule(source[S.TS], kinds[source[S.TS]]),
             *(numbers([options.rating_col]) if options.rating_col else [])]
    rows, dropped = check_lines(table, rules, options.on_bad_lines)
    skipped.extend(d for d in (dropped,) if d)
    # Columns already called user_id/item_id/ts/behavior but not mapped would
    # collide with the renamed ones; the mapping says which one the user means.
    shadowed = [c for c in table.columns if c in columns.values() and c not in columns]
    if shadowed:
        log.warning("'%s': ignoring column(s) %s in favour of the mapped ones", path, shadowed)
    rows = _typed(rows, kinds, table).drop(LINE, *shadowed).rename(columns)
    rows = _timestamps(rows, kinds[source[S.TS]], options, source[S.TS], table)
    rows = _behaviors(rows, options, source.get(S.BEHAVIOR), table)
    return rows, {target: kinds[column] for column, target in columns.items()}


def _side(src: str | Path, id_col: str, target: str, options: Options, skipped: list[Skipped],
          what: str) -> tuple[pl.LazyFrame, Path, str]:
    """An items/users table: checked, typed, its ``id_col`` renamed to ``target``; and the id's kind."""
    path = existing(src, f"{what} file")
    table = _open(path, options.sep, what)
    key = id_col if id_col in table.columns else target
    if key not in table.columns:
        raise RecallError(f"column {id_col!r} not in {what} '{path}' (columns: {', '.join(table.columns)}); "
                          f"name its id column {id_col!r} or {target!r}")
    kinds = _profile(table, None, keep_text=options.list_cols, ids=[key])
    rows, dropped = check_lines(table, complete([key]), options.on_bad_lines)
    skipped.extend(d for d in (dropped,) if d)
    rows = _typed(rows, kinds, table).drop(LINE)
    if key != target:
        # The mapped column wins over a same-named column that is not the id.
        rows = rows.drop(target, strict=False).rename({key: target})
    return rows, path, kinds[key]


def plan_generic(
    src: str | Path,
    *,
    user_col: str = S.USER,
    item_col: str = S.ITEM,
    ts_col: str = S.TS,
    behavior_col: str | None = None,
    behavior_map: dict[Any, str] | None = None,
    rating_col: str | None = None,
    click_threshold: Any = None,
    fav_threshold: Any = None,
    ts_unit: str = "s",
    list_cols: str | list[str] | None = None,
    list_sep: str = "|",
    sep: str | None = None,
    on_bad_lines: str = "error",
    items_src: str | Path | None = None,
    users_src: str | Path | None = None,
) -> Plan:
    """Import any CSV or Parquet event log through a column mapping.

    Parameters
    ----------
    src
        The events file (``.csv`` with a header line, or ``.parquet``).
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
    rating_col, click_threshold, fav_threshold
        Behaviours from ratings instead (as for MovieLens): every rating is a
        ``click``, or with ``click_threshold`` an ``impression`` plus a ``click`` at
        or above it; at or above ``fav_threshold`` also a ``fav``. The rating is
        kept as the extra column ``rating``.
    ts_unit
        Unit of a numeric timestamp: ``"s"``, ``"ms"``, ``"us"`` or ``"ns"``;
        converted to whole seconds (rounded down). Datetime or ISO-string
        timestamps ignore it.
    list_cols, list_sep
        Columns (in any of the three files) holding lists such as ``a|b|c``,
        split on ``list_sep`` into List[String] columns; comma-separated names.
    sep
        The CSV field separator; detected among ``,`` tab ``;`` ``|`` when not given.
    on_bad_lines
        ``"error"`` refuses a line with a missing key or an unparsable timestamp
        or rating, naming it; ``"skip"`` drops such lines and counts them.
    items_src, users_src
        Optional item / user tables (CSV or Parquet); their ``item_col`` /
        ``user_col`` column is renamed to ``item_id`` / ``user_id``.

    Returns
    -------
    Plan
        Events with extra source columns kept (typed: integer, float or text);
        ids are integers when every id in every file is one, else strings.
    """
    options = _parse_options(user_col, item_col, ts_col, behavior_col, behavior_map, rating_col,
                             click_threshold, fav_threshold, ts_unit, list_cols, list_sep, sep, on_bad_lines)
    path = existing(src, "events file")
    skipped: list[Skipped] = []
    events, kinds = _events(path, options, skipped)
    plan = Plan(events=events, files={"events": path}, skipped=skipped)
    id_kinds = {S.USER: [kinds[S.USER]], S.ITEM: [kinds[S.ITEM]]}
    for name, side_src, id_col, target in (("items", items_src, item_col, S.ITEM),
                                           ("users", users_src, user_col, S.USER)):
        if side_src is not None:
            table, plan.files[name], kind = _side(side_src, id_col, target, options, skipped, f"{name} table")
            setattr(plan, name, table)
            id_kinds[target].append(kind)
    _finish_columns(plan, options, {c: all(k == INT for k in ks) for c, ks in id_kinds.items()})
    return plan


def _finish_columns(plan: Plan, options: Options, integral: dict[str, bool]) -> None:
    """Cast ids alike in every table (integers only if all are) and split the list columns."""
    # Integer ids stay as they are: normalisation casts them to Int64 after its range check.
    casts = {c: (pl.col(c) if integral[c] else pl.col(c).cast(pl.String)) for c in integral}
    plan.events = _split_lists(plan.events.with_columns(casts.values()), options.list_cols, options.list_sep)
    found = set(plan.events.collect_schema().names())
    for name, column in (("items", S.ITEM), ("users", S.USER)):
        table = getattr(plan, name)
        if table is not None:
            table = _split_lists(table.with_columns(casts[column]), options.list_cols, options.list_sep)
            setattr(plan, name, table)
            found |= set(table.collect_schema().names())
    missing = [c for c in options.list_cols if c not in found]
    if missing:
        raise RecallError(f"list_cols names column(s) {', '.join(map(repr, missing))} found in none of the "
                          f"imported files (columns: {', '.join(sorted(found))})")
