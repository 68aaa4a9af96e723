"""The I/O boundary: read event, item and user tables, check them, normalise columns once.

Everything past this module sees the fixed names of :mod:`recall.schema`:
``user_id`` and ``item_id`` as Int64 or String, ``behavior`` as an Enum of
:data:`recall.schema.BEHAVIORS`, ``ts`` as Int64 epoch seconds.
"""

from __future__ import annotations

import csv
import difflib
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from recall import schema as S
from recall.errors import RecallError

log = logging.getLogger("recall")

BEHAVIOR_DTYPE = pl.Enum(list(S.BEHAVIORS))
# Rows searched for exact duplicates at a time when a log is normalised lazily (about 0.4 GiB).
DEDUP_PARTITION_ROWS = 5_000_000
_ROW, _HASH = "__recall_row__", "__recall_hash__"
TABLE_SUFFIXES = (".parquet", ".csv")
# Names other tools use for our columns, for the "rename X to Y" hint.
COLUMN_SYNONYMS = {
    S.USER: ("user", "uid", "userid", "user_id:token", "visitorid", "customer_id"),
    S.ITEM: ("item", "iid", "itemid", "item_id:token", "product_id", "sku"),
    S.BEHAVIOR: ("behavior_type", "behaviour", "action", "event", "event_type", "type"),
    S.TS: ("timestamp", "time", "datetime", "event_time", "timestamp:float", "date"),
}


@dataclass
class Dataset:
    """Events plus the optional side tables, already normalised."""

    events: pl.DataFrame
    items: pl.DataFrame | None = None
    users: pl.DataFrame | None = None
    files: dict[str, Path] = field(default_factory=dict)


def find_table(directory: Path, name: str) -> Path | None:
    """Return ``directory/name.parquet`` or ``directory/name.csv`` if present."""
    for suffix in TABLE_SUFFIXES:
        path = directory / f"{name}{suffix}"
        if path.exists():
            return path
    return None


def load_dataset(directory: str | Path) -> Dataset:
    """Read ``events`` (required), ``items`` and ``users`` (optional) from a folder."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise RecallError(
            f"'{directory}' is a file, not a data folder; pass the folder that holds "
            "events.parquet or events.csv"
        )
    if not directory.is_dir():
        raise RecallError(
            f"data folder '{directory}' does not exist; create one with "
            "'recall data synth --out DIR' or 'recall data import FORMAT SRC --out DIR'"
        )
    events_path = find_table(directory, "events")
    if events_path is None:
        raise RecallError(
            f"no events table in '{directory}': expected events.parquet or events.csv "
            f"with columns {', '.join(S.EVENT_COLUMNS)}"
        )
    files = {"events": events_path}
    events = normalise_events(read_table(events_path), events_path)
    items = users = None
    if (items_path := find_table(directory, "items")) is not None:
        files["items"] = items_path
        items = normalise_items(read_table(items_path), items_path)
    if (users_path := find_table(directory, "users")) is not None:
        files["users"] = users_path
        users = normalise_users(read_table(users_path), users_path)
    return Dataset(events=events, items=items, users=users, files=files)


def read_table(path: Path) -> pl.DataFrame:
    """Read a Parquet or CSV file, turning every reader failure into a RecallError."""
    path = Path(path)
    if not path.exists():
        raise RecallError(f"file '{path}' does not exist")
    if path.suffix not in TABLE_SUFFIXES:
        raise RecallError(f"'{path}': unsupported file type '{path.suffix}'; use .parquet or .csv")
    try:
        # glob=False: a path is a file name, not a pattern ('data[1]/events.csv' must work).
        if path.suffix == ".parquet":
            return pl.read_parquet(path, glob=False)
        frame = pl.read_csv(path, infer_schema_length=10_000, glob=False)
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RecallError(
            f"cannot read '{path}' ({first_line}); check that it is a valid "
            f"{path.suffix[1:]} file, e.g. re-export it"
        ) from exc
    _reject_repeated_header(path, frame)
    return frame


def _reject_repeated_header(path: Path, frame: pl.DataFrame) -> None:
    """A CSV header naming a column twice is ambiguous; polars would silently rename the second copy."""
    if not any("_duplicated_" in name for name in frame.columns):
        return
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        header = next(csv.reader(handle), [])
    repeated = sorted(name for name, count in Counter(header).items() if count > 1)
    if repeated:
        raise RecallError(
            f"'{path}' names the column(s) {', '.join(repr(c) for c in repeated)} more than once in its "
            "header; keep one of each (which copy is right cannot be guessed)"
        )


def _require_columns(columns: list[str], required: tuple[str, ...], path: Path) -> None:
    missing = [c for c in required if c not in columns]
    if not missing:
        return
    hints = []
    for col in missing:
        close = [c for c in columns if c.lower() in COLUMN_SYNONYMS.get(col, ())]
        close = close or difflib.get_close_matches(col, columns, n=1, cutoff=0.6)
        if close:
            hints.append(f"rename '{close[0]}' to '{col}'")
    fix = "; ".join(hints) if hints else f"add the column(s) or map them with 'recall data import generic'"
    raise RecallError(
        f"column(s) {', '.join(repr(c) for c in missing)} missing from '{path}' "
        f"(found: {', '.join(columns) or 'none'}); {fix}"
    )


def _reject_all_null(dtype: pl.DataType, height: int, column: str, path: Path) -> None:
    """A column read back with dtype Null holds nothing but nulls: say so, not 'dtype Null'."""
    if dtype == pl.Null:
        raise RecallError(
            f"column '{column}' in '{path}' has only null values ({height} row(s)); fill it"
        )


def _check_int64_range(low, high, column: str, path: Path) -> None:
    """Integer ids past the Int64 range: UInt64 from Parquet, Int128 from CSV (polars infers it past 2^63)."""
    if high is not None and high > 2**63 - 1:
        raise RecallError(
            f"column '{column}' in '{path}' holds ids above 2^63-1 (e.g. {high}); store them as strings"
        )
    if low is not None and low < -(2**63):
        raise RecallError(
            f"column '{column}' in '{path}' holds ids below -2^63 (e.g. {low}); store them as strings"
        )


def _is_text(dtype: pl.DataType) -> bool:
    return dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum)


def _ts_seconds(dtype: pl.DataType) -> pl.Expr | None:
    """``ts`` as (possibly fractional) epoch seconds, or None when its dtype cannot be a time.

    Strings are parsed leniently (null where they are not datetimes) so that the
    statistics pass can count the failures instead of stopping at the first one.
    """
    col = pl.col(S.TS)
    if dtype == pl.String:
        col = col.str.to_datetime(strict=False, time_zone="UTC")
    if dtype == pl.String or isinstance(dtype, pl.Datetime) or dtype == pl.Date:
        return col.cast(pl.Datetime("us")).dt.epoch("s")
    if dtype.is_float() or dtype.is_integer():
        return col
    return None


def _event_stats(frame: pl.LazyFrame, schema: pl.Schema) -> dict:
    """Everything the checks of :func:`normalise_events` need from the data, in one pass.

    Only statistics that the column's dtype allows are computed; a column of a
    wrong dtype is refused from the schema alone.
    """
    exprs = [pl.len().alias("len")]
    for column in (S.USER, S.ITEM, S.BEHAVIOR):
        if column in schema:
            exprs.append(pl.col(column).null_count().alias(f"{column}.nulls"))
    for column in (S.USER, S.ITEM):
        if column in schema and schema[column].is_integer():
            exprs += [pl.col(column).min().alias(f"{column}.min"), pl.col(column).max().alias(f"{column}.max")]
    seconds = _ts_seconds(schema[S.TS]) if S.TS in schema else None
    if seconds is not None:
        exprs += [seconds.null_count().alias("ts.nulls"), seconds.min().alias("ts.min"),
                  seconds.max().alias("ts.max"),
                  (pl.col(S.TS).is_not_null() & seconds.is_null()).sum().alias("ts.unparsed")]
        if schema[S.TS].is_float():
            exprs.append((seconds.is_nan() | seconds.is_infinite()).sum().alias("ts.not_finite"))
    if S.BEHAVIOR in schema and _is_text(schema[S.BEHAVIOR]):
        behavior = pl.col(S.BEHAVIOR).cast(pl.String)
        exprs.append((behavior.is_not_null() & ~behavior.is_in(list(S.BEHAVIORS))).sum().alias("behavior.unknown"))
    return frame.select(exprs).collect(engine="streaming").row(0, named=True)


def _id_cast(schema: pl.Schema, stats: dict, column: str, path: Path) -> pl.Expr:
    """Check id ``column`` and return the expression casting it to Int64 or String."""
    dtype = schema[column]
    _reject_all_null(dtype, stats["len"], column, path)
    if dtype.is_integer():
        _check_int64_range(stats[f"{column}.min"], stats[f"{column}.max"], column, path)
        cast = pl.col(column).cast(pl.Int64)
    elif _is_text(dtype):
        cast = pl.col(column).cast(pl.String)
    else:
        raise RecallError(
            f"column '{column}' in '{path}' has dtype {dtype}; ids must be integers or strings "
            f"(cast the column before writing the file, e.g. df['{column}'].astype('int64') in pandas)"
        )
    nulls = stats[f"{column}.nulls"]
    if nulls:
        raise RecallError(
            f"column '{column}' in '{path}' has {nulls} null value(s); drop or fill those rows"
        )
    return cast


def _ts_cast(frame: pl.LazyFrame, schema: pl.Schema, stats: dict, path: Path) -> pl.Expr:
    """Check ``ts`` and return the expression giving whole epoch seconds (Int64)."""
    dtype = schema[S.TS]
    _reject_all_null(dtype, stats["len"], S.TS, path)
    if dtype == pl.String and stats["ts.unparsed"]:
        raise RecallError(
            f"column 'ts' in '{path}' holds strings that are not datetimes "
            f"(e.g. {_unparsed_example(frame)}); use epoch seconds or ISO 8601"
        )
    seconds = _ts_seconds(dtype)
    if seconds is None:
        raise RecallError(
            f"column 'ts' in '{path}' has dtype {dtype}; use epoch seconds (integer) or a datetime"
        )
    nulls = stats["ts.nulls"]
    if nulls:
        raise RecallError(f"column 'ts' in '{path}' has {nulls} null value(s); drop or fill those rows")
    if stats.get("ts.not_finite"):
        raise RecallError(
            f"column 'ts' in '{path}' has {stats['ts.not_finite']} NaN or infinite value(s); "
            "drop or fill those rows"
        )
    # Range checks run on the values as read, before the cast to Int64, so that
    # huge floats or UInt64 values get this message instead of a cast failure.
    ts_max, ts_min = stats["ts.max"], stats["ts.min"]
    if ts_max >= S.MAX_EPOCH_SECONDS:
        raise RecallError(
            f"column 'ts' in '{path}' looks like milliseconds (max {ts_max}); "
            "convert to epoch seconds, e.g. ts // 1000"
        )
    if ts_min < 0:
        raise RecallError(
            f"column 'ts' in '{path}' has negative timestamps (min {ts_min}); "
            "use epoch seconds after 1970"
        )
    return (seconds.floor() if dtype.is_float() else seconds).cast(pl.Int64).alias(S.TS)


def _unparsed_example(frame: pl.LazyFrame) -> list:
    """The first ``ts`` string that does not parse as a datetime (falls back to the first value)."""
    values = frame.select(S.TS).collect(engine="streaming").to_series()
    parsed = values.str.to_datetime(strict=False, time_zone="UTC")
    bad = values.filter(parsed.is_null() & values.is_not_null())
    return (bad if bad.len() else values).drop_nulls().head(1).to_list()


def _behavior_cast(frame: pl.LazyFrame, schema: pl.Schema, stats: dict, path: Path) -> pl.Expr:
    """Check ``behavior`` and return the expression casting it to the behaviour Enum."""
    dtype = schema[S.BEHAVIOR]
    _reject_all_null(dtype, stats["len"], S.BEHAVIOR, path)
    if not _is_text(dtype):
        raise RecallError(
            f"column 'behavior' in '{path}' has dtype {dtype}; "
            f"use strings, one of {', '.join(S.BEHAVIORS)}"
        )
    nulls = stats["behavior.nulls"]
    if nulls:
        raise RecallError(
            f"column 'behavior' in '{path}' has {nulls} null value(s); drop or fill those rows"
        )
    if stats["behavior.unknown"]:
        behavior = pl.col(S.BEHAVIOR).cast(pl.String)
        unknown = (frame.select(behavior).filter(~behavior.is_in(list(S.BEHAVIORS))).unique()
                   .sort(S.BEHAVIOR).head(5).collect(engine="streaming").to_series().to_list())
        raise RecallError(
            f"column 'behavior' in '{path}' has unknown value(s) {unknown}; allowed: "
            f"{', '.join(S.BEHAVIORS)} (map e.g. pv->click with 'recall data import')"
        )
    return pl.col(S.BEHAVIOR).cast(pl.String).cast(BEHAVIOR_DTYPE)


def normalise_events(df: pl.DataFrame | pl.LazyFrame, path: Path) -> pl.DataFrame | pl.LazyFrame:
    """Check an events table and return it with the fixed columns and dtypes.

    Exact duplicate rows (same user, item, behaviour and second) are logging
    double-writes: they are dropped with a warning. Extra columns are kept.

    A LazyFrame (a large import written straight to Parquet) is checked with one
    streaming pass of column statistics and comes back lazy, duplicates dropped
    by the plan; the caller counts them once the rows are written. Either way
    the checks and the casts are the same code.
    """
    path = Path(path)
    frame = df.lazy()
    schema = frame.collect_schema()
    stats = _event_stats(frame, schema)
    if stats["len"] == 0:
        raise RecallError(f"'{path}' has no rows; an events table needs at least one event")
    _require_columns(schema.names(), S.EVENT_COLUMNS, path)
    casts = [
        _id_cast(schema, stats, S.USER, path),
        _id_cast(schema, stats, S.ITEM, path),
        _ts_cast(frame, schema, stats, path),
        _behavior_cast(frame, schema, stats, path),
    ]
    front = list(S.EVENT_COLUMNS)
    out = frame.with_columns(casts).select(front + [c for c in schema.names() if c not in front])
    if isinstance(df, pl.LazyFrame):
        repeated = _repeated_rows(out, stats["len"])
        if repeated.len():
            log.warning("'%s': dropped %d exact duplicate event row(s)", path, repeated.len())
        return out.with_row_index(_ROW).filter(~pl.col(_ROW).is_in(repeated.implode())).drop(_ROW)
    out = out.collect()
    before = out.height
    out = out.unique(maintain_order=True)
    if out.height < before:
        log.warning("'%s': dropped %d exact duplicate event row(s)", path, before - out.height)
    return out


def _repeated_rows(frame: pl.LazyFrame, rows: int) -> pl.Series:
    """Row numbers of ``frame`` that repeat an earlier row exactly, in bounded memory.

    ``unique`` would hold every row in a hash table (about 8 GiB for a 100M-row
    log). Here each row is reduced to a 64-bit hash: a streaming ``group_by`` on
    the hash alone finds the hashes seen twice, and only the rows with those hashes
    are collected and compared in full (so a hash collision drops nothing). Rows
    are taken :data:`DEDUP_PARTITION_ROWS` at a time by hash, one pass each, so
    memory follows the partition, not the log. The rows found are dropped by
    number, which keeps the order of the others, as ``unique(maintain_order=True)``.
    """
    parts = max(1, -(-rows // DEDUP_PARTITION_ROWS))
    columns = frame.collect_schema().names()
    keyed = frame.with_row_index(_ROW).with_columns(pl.struct(columns).hash(seed=0).alias(_HASH))
    found = [pl.Series(_ROW, [], dtype=keyed.collect_schema()[_ROW])]
    for k in range(parts):
        part = keyed.filter(pl.col(_HASH) % parts == k) if parts > 1 else keyed
        seen_twice = part.group_by(_HASH).len().filter(pl.col("len") > 1).select(_HASH)
        seen_twice = seen_twice.collect(engine="streaming")
        if seen_twice.height == 0:
            continue
        copies = part.join(seen_twice.lazy(), on=_HASH, how="semi").collect(engine="streaming").sort(_ROW)
        # Every copy but the first of each group goes.
        found.append(copies.filter(~pl.struct(columns).is_first_distinct())[_ROW])
    return pl.concat(found)


def _normalise_id(df: pl.DataFrame, column: str, path: Path) -> pl.DataFrame:
    """Eager id normalisation for the side tables (items, users), with the events' rules."""
    stats = df.select(pl.len().alias("len"), pl.col(column).null_count().alias(f"{column}.nulls"),
                      *([pl.col(column).min().alias(f"{column}.min"), pl.col(column).max().alias(f"{column}.max")]
                        if df.schema[column].is_integer() else [])).row(0, named=True)
    return df.with_columns(_id_cast(df.schema, stats, column, path))


def normalise_items(df: pl.DataFrame, path: Path) -> pl.DataFrame:
    """Check an items table: ``item_id`` unique and non-null; side columns kept as they are."""
    path = Path(path)
    if df.height == 0:
        raise RecallError(f"'{path}' has no rows; remove the file or add items")
    _require_columns(df.columns, (S.ITEM,), path)
    df = _normalise_id(df, S.ITEM, path)
    for side in (S.CATEGORY, S.BRAND):  # nulls allowed: unknown category/brand
        if side in df.columns:
            dtype = df.schema[side]
            if dtype.is_integer():
                _check_int64_range(df[side].min(), df[side].max(), side, path)
                df = df.with_columns(pl.col(side).cast(pl.Int64))
            elif dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
                df = df.with_columns(pl.col(side).cast(pl.String))
            else:
                raise RecallError(
                    f"column '{side}' in '{path}' has dtype {dtype}; use integers or strings"
                )
    dupes = df.height - df[S.ITEM].n_unique()
    if dupes:
        raise RecallError(
            f"'{path}' lists {dupes} item_id(s) more than once; keep one row per item"
        )
    return df


def normalise_users(df: pl.DataFrame, path: Path) -> pl.DataFrame:
    """Check a users table: ``user_id`` unique and non-null; attribute columns kept."""
    path = Path(path)
    if df.height == 0:
        raise RecallError(f"'{path}' has no rows; remove the file or add users")
    _require_columns(df.columns, (S.USER,), path)
    df = _normalise_id(df, S.USER, path)
    dupes = df.height - df[S.USER].n_unique()
    if dupes:
        raise RecallError(f"'{path}' lists {dupes} user_id(s) more than once; keep one row per user")
    return df


def check_id_types(data: Dataset) -> None:
    """Side tables must use the same id type as the events, or joins silently match nothing."""
    for name, table, column in (("items", data.items, S.ITEM), ("users", data.users, S.USER)):
        if table is not None and table.schema[column] != data.events.schema[column]:
            raise RecallError(
                f"'{data.files[name]}' has {column} as {table.schema[column]} but the events "
                f"have {data.events.schema[column]}; use the same id type in both files"
            )


def summarise(data: Dataset) -> dict:
    """Rows, users, items, time span, behaviour mix and side-info coverage, as plain values."""
    return summarise_tables(data.events.lazy(),
                            None if data.items is None else data.items.lazy(),
                            None if data.users is None else data.users.lazy())


def _coverage(keys: pl.LazyFrame, table: pl.LazyFrame, column: str) -> tuple[int, float]:
    """Rows of a side table, and the share of the events' distinct ``column`` values it lists."""
    side = table.select(column)
    counts = pl.concat([side.select(pl.len().alias("n")),
                        keys.join(side, on=column, how="semi").select(pl.len().alias("n"))])
    rows, covered = counts.collect(engine="streaming")["n"].to_list()
    return rows, covered


def summarise_tables(events: pl.LazyFrame, items: pl.LazyFrame | None = None,
                     users: pl.LazyFrame | None = None) -> dict:
    """:func:`summarise` over lazy tables, e.g. Parquet files scanned without loading them.

    Every figure is a streaming aggregate, so a log larger than memory can be summarised.
    """
    stats = events.select(
        pl.len().alias("events"), pl.col(S.USER).n_unique().alias("users"),
        pl.col(S.ITEM).n_unique().alias("items"), pl.col(S.TS).min().alias("ts_min"),
        pl.col(S.TS).max().alias("ts_max"),
    ).collect(engine="streaming").row(0, named=True)
    mix = events.group_by(S.BEHAVIOR).len().sort(S.BEHAVIOR).collect(engine="streaming")
    summary = {
        "events": stats["events"],
        "users": stats["users"],
        "items": stats["items"],
        "ts_min": int(stats["ts_min"]),
        "ts_max": int(stats["ts_max"]),
        "days": round((stats["ts_max"] - stats["ts_min"]) / 86400, 2),
        "behaviors": {str(b): int(n) for b, n in mix.iter_rows()},
    }
    for name, table, column, n_keys, attributes in (
        ("items", items, S.ITEM, stats["items"], "item_side_columns"),
        ("users", users, S.USER, stats["users"], "user_attribute_columns"),
    ):
        if table is None:
            continue
        rows, covered = _coverage(events.select(column).unique(), table, column)
        summary[f"{name}_table_rows"] = rows
        summary[f"{name[:-1]}_coverage"] = round(covered / max(n_keys, 1), 4)
        summary[attributes] = [c for c in table.collect_schema().names() if c != column]
    return summary


def write_dataset(data: Dataset, directory: str | Path) -> dict[str, Path]:
    """Write events/items/users as Parquet into ``directory`` (created), atomically per file."""
    from recall.publish import write_parquet_atomic

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, table in (("events", data.events), ("items", data.items), ("users", data.users)):
        if table is not None:
            written[name] = write_parquet_atomic(table, directory / f"{name}.parquet")
    return written
