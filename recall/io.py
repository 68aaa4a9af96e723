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


def _require_columns(df: pl.DataFrame, required: tuple[str, ...], path: Path) -> None:
    missing = [c for c in required if c not in df.columns]
    if not missing:
        return
    hints = []
    for col in missing:
        close = [c for c in df.columns if c.lower() in COLUMN_SYNONYMS.get(col, ())]
        close = close or difflib.get_close_matches(col, df.columns, n=1, cutoff=0.6)
        if close:
            hints.append(f"rename '{close[0]}' to '{col}'")
    fix = "; ".join(hints) if hints else f"add the column(s) or map them with 'recall data import generic'"
    raise RecallError(
        f"column(s) {', '.join(repr(c) for c in missing)} missing from '{path}' "
        f"(found: {', '.join(df.columns) or 'none'}); {fix}"
    )


def _reject_all_null(df: pl.DataFrame, column: str, path: Path) -> None:
    """A column read back with dtype Null holds nothing but nulls: say so, not 'dtype Null'."""
    if df.schema[column] == pl.Null:
        raise RecallError(
            f"column '{column}' in '{path}' has only null values ({df.height} row(s)); fill it"
        )


def _check_int64_range(df: pl.DataFrame, column: str, path: Path) -> None:
    """Integer ids past the Int64 range: UInt64 from Parquet, Int128 from CSV (polars infers it past 2^63)."""
    low, high = df[column].min(), df[column].max()
    if high is not None and high > 2**63 - 1:
        raise RecallError(
            f"column '{column}' in '{path}' holds ids above 2^63-1 (e.g. {high}); store them as strings"
        )
    if low is not None and low < -(2**63):
        raise RecallError(
            f"column '{column}' in '{path}' holds ids below -2^63 (e.g. {low}); store them as strings"
        )


def _normalise_id(df: pl.DataFrame, column: str, path: Path) -> pl.DataFrame:
    _reject_all_null(df, column, path)
    dtype = df.schema[column]
    if dtype.is_integer():
        _check_int64_range(df, column, path)
        df = df.with_columns(pl.col(column).cast(pl.Int64))
    elif dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
        df = df.with_columns(pl.col(column).cast(pl.String))
    else:
        raise RecallError(
            f"column '{column}' in '{path}' has dtype {dtype}; ids must be integers or strings "
            f"(cast the column before writing the file, e.g. df['{column}'].astype('int64') in pandas)"
        )
    nulls = df[column].null_count()
    if nulls:
        raise RecallError(
            f"column '{column}' in '{path}' has {nulls} null value(s); drop or fill those rows"
        )
    return df


def _normalise_ts(df: pl.DataFrame, path: Path) -> pl.DataFrame:
    _reject_all_null(df, S.TS, path)
    dtype = df.schema[S.TS]
    col = pl.col(S.TS)
    if dtype == pl.String:
        try:
            df = df.with_columns(col.str.to_datetime(strict=True, time_zone="UTC"))
        except pl.exceptions.PolarsError as exc:
            raise RecallError(
                f"column 'ts' in '{path}' holds strings that are not datetimes "
                f"(e.g. {_unparsed_example(df[S.TS])}); use epoch seconds or ISO 8601"
            ) from exc
        dtype = df.schema[S.TS]
    if isinstance(dtype, pl.Datetime) or dtype == pl.Date:
        df = df.with_columns(col.cast(pl.Datetime("us")).dt.epoch("s").alias(S.TS))
    elif not (dtype.is_float() or dtype.is_integer()):
        raise RecallError(
            f"column 'ts' in '{path}' has dtype {dtype}; use epoch seconds (integer) or a datetime"
        )
    ts = df[S.TS]
    nulls = ts.null_count()
    if nulls:
        raise RecallError(f"column 'ts' in '{path}' has {nulls} null value(s); drop or fill those rows")
    if ts.dtype.is_float():
        not_finite = int((ts.is_nan() | ts.is_infinite()).sum())
        if not_finite:
            raise RecallError(
                f"column 'ts' in '{path}' has {not_finite} NaN or infinite value(s); "
                "drop or fill those rows"
            )
    # Range checks run on the values as read, before the cast to Int64, so that
    # huge floats or UInt64 values get this message instead of a cast failure.
    ts_max, ts_min = ts.max(), ts.min()
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
    return df.with_columns((col.floor() if ts.dtype.is_float() else col).cast(pl.Int64))


def _unparsed_example(values: pl.Series) -> list:
    """The first string that does not parse as a datetime (falls back to the first value)."""
    try:
        parsed = values.str.to_datetime(strict=False, time_zone="UTC")
        bad = values.filter(parsed.is_null() & values.is_not_null())
    except pl.exceptions.PolarsError:
        bad = values
    return (bad if bad.len() else values).drop_nulls().head(1).to_list()


def normalise_events(df: pl.DataFrame, path: Path) -> pl.DataFrame:
    """Check an events table and return it with the fixed columns and dtypes.

    Exact duplicate rows (same user, item, behaviour and second) are logging
    double-writes: they are dropped with a warning. Extra columns are kept.
    """
    path = Path(path)
    if df.height == 0:
        raise RecallError(f"'{path}' has no rows; an events table needs at least one event")
    _require_columns(df, S.EVENT_COLUMNS, path)
    df = _normalise_id(df, S.USER, path)
    df = _normalise_id(df, S.ITEM, path)
    df = _normalise_ts(df, path)
    _reject_all_null(df, S.BEHAVIOR, path)
    behavior = df[S.BEHAVIOR]
    if behavior.dtype not in (pl.String, pl.Categorical) and not isinstance(behavior.dtype, pl.Enum):
        raise RecallError(
            f"column 'behavior' in '{path}' has dtype {behavior.dtype}; "
            f"use strings, one of {', '.join(S.BEHAVIORS)}"
        )
    behavior = behavior.cast(pl.String)
    if behavior.null_count():
        raise RecallError(
            f"column 'behavior' in '{path}' has {behavior.null_count()} null value(s); "
            "drop or fill those rows"
        )
    unknown = behavior.filter(~behavior.is_in(list(S.BEHAVIORS))).unique().sort().head(5).to_list()
    if unknown:
        raise RecallError(
            f"column 'behavior' in '{path}' has unknown value(s) {unknown}; allowed: "
            f"{', '.join(S.BEHAVIORS)} (map e.g. pv->click with 'recall data import')"
        )
    df = df.with_columns(pl.col(S.BEHAVIOR).cast(pl.String).cast(BEHAVIOR_DTYPE))
    before = df.height
    df = df.unique(maintain_order=True)
    if df.height < before:
        log.warning("'%s': dropped %d exact duplicate event row(s)", path, before - df.height)
    front = list(S.EVENT_COLUMNS)
    return df.select(front + [c for c in df.columns if c not in front])


def normalise_items(df: pl.DataFrame, path: Path) -> pl.DataFrame:
    """Check an items table: ``item_id`` unique and non-null; side columns kept as they are."""
    path = Path(path)
    if df.height == 0:
        raise RecallError(f"'{path}' has no rows; remove the file or add items")
    _require_columns(df, (S.ITEM,), path)
    df = _normalise_id(df, S.ITEM, path)
    for side in (S.CATEGORY, S.BRAND):  # nulls allowed: unknown category/brand
        if side in df.columns:
            dtype = df.schema[side]
            if dtype.is_integer():
                _check_int64_range(df, side, path)
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
    _require_columns(df, (S.USER,), path)
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
    ev = data.events
    mix = ev.group_by(S.BEHAVIOR).len().sort(S.BEHAVIOR)
    summary = {
        "events": ev.height,
        "users": ev[S.USER].n_unique(),
        "items": ev[S.ITEM].n_unique(),
        "ts_min": int(ev[S.TS].min()),
        "ts_max": int(ev[S.TS].max()),
        "days": round((ev[S.TS].max() - ev[S.TS].min()) / 86400, 2),
        "behaviors": {str(b): int(n) for b, n in mix.iter_rows()},
    }
    event_items = ev.select(S.ITEM).unique()
    if data.items is not None:
        summary["items_table_rows"] = data.items.height
        summary["item_coverage"] = round(
            event_items.join(data.items.select(S.ITEM), on=S.ITEM, how="semi").height
            / max(event_items.height, 1), 4)
        summary["item_side_columns"] = [c for c in data.items.columns if c != S.ITEM]
    if data.users is not None:
        event_users = ev.select(S.USER).unique()
        summary["users_table_rows"] = data.users.height
        summary["user_coverage"] = round(
            event_users.join(data.users.select(S.USER), on=S.USER, how="semi").height
            / max(event_users.height, 1), 4)
        summary["user_attribute_columns"] = [c for c in data.users.columns if c != S.USER]
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
