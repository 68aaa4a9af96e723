"""Tests for recall.io, the I/O boundary.

The contract: every kind of bad input gets exactly one clear ``RecallError`` whose
message names the file, the column (where one applies) and a fix; on the command
line that is one ``error: ...`` line on stderr, exit code 1 and no traceback.
Each bad input below is checked both ways: through the library
(``load_dataset`` + ``check_id_types``, what ``recall data check`` runs) and
through ``recall data check DIR``.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Callable

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from recall import schema as S
from recall.cli import app
from recall.errors import RecallError
from recall.io import (
    BEHAVIOR_DTYPE,
    check_id_types,
    load_dataset,
    normalise_events,
    read_table,
    summarise,
)

RECALL_EXE = Path(sys.executable).parent / "recall"
T0 = 1_700_000_000  # 2023-11-14T22:13:20Z

runner = CliRunner()

GOOD_EVENTS = {
    "user_id": [1, 2, 2, 3],
    "item_id": [10, 20, 10, 30],
    "behavior": ["click", "buy", "fav", "impression"],
    "ts": [T0, T0 + 100, T0 + 200, T0 + 300],
}
GOOD_CSV = "user_id,item_id,behavior,ts\n1,10,click,1700000000\n2,20,buy,1700000100\n"


def events(**columns) -> pl.DataFrame:
    """The good events table with some columns replaced (a value of None drops the column)."""
    data = {**GOOD_EVENTS, **columns}
    return pl.DataFrame({k: v for k, v in data.items() if v is not None})


def write(folder: Path, frame: pl.DataFrame, name: str = "events", fmt: str = "parquet") -> Path:
    path = folder / f"{name}.{fmt}"
    if fmt == "parquet":
        frame.write_parquet(path)
    else:
        frame.write_csv(path)
    return path


def write_text(folder: Path, text: str, name: str = "events.csv") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def check_folder(folder: Path):
    """What ``recall data check`` does, minus the printing."""
    data = load_dataset(folder)
    check_id_types(data)
    return data


def assert_cli_rejects(folder: Path, fragments: list[str]) -> None:
    """``recall data check`` exits 1 with one ``error:`` message on stderr and no traceback."""
    result = runner.invoke(app, ["data", "check", str(folder)])
    assert result.exit_code == 1, (result.stdout, result.stderr)
    # typer.Exit(1) surfaces as SystemExit; any other exception means the error escaped.
    assert type(result.exception) is SystemExit, repr(result.exception)
    assert result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


# --------------------------------------------------------------------------------------
# Bad inputs. Each builder writes into the (existing, empty) data folder and returns the
# fragments the message must contain: the file, the column, and the suggested fix.
# --------------------------------------------------------------------------------------

BAD_INPUTS: dict[str, Callable[[Path], list[str]]] = {}


def bad_input(name: str):
    def register(build):
        assert name not in BAD_INPUTS
        BAD_INPUTS[name] = build
        return build
    return register


# missing and misnamed columns

@bad_input("missing-column-csv")
def _(folder):
    path = write_text(folder, "user_id,item_id,ts\n1,10,1700000000\n")
    return [str(path), "'behavior' missing", "found: user_id, item_id, ts",
            "map them with 'recall data import generic'"]


@bad_input("missing-column-parquet")
def _(folder):
    path = write(folder, events(item_id=None))
    return [str(path), "'item_id' missing", "recall data import generic"]


@bad_input("misnamed-timestamp")
def _(folder):
    path = write(folder, events().rename({"ts": "timestamp"}))
    return [str(path), "'ts' missing", "rename 'timestamp' to 'ts'"]


@bad_input("misnamed-uid-csv")
def _(folder):
    path = write_text(folder, "uid,item_id,behavior,ts\n1,10,click,1700000000\n")
    return [str(path), "'user_id' missing", "rename 'uid' to 'user_id'"]


@bad_input("misnamed-Behaviour-capitalised")
def _(folder):
    path = write(folder, events().rename({"behavior": "Behaviour"}))
    return [str(path), "'behavior' missing", "rename 'Behaviour' to 'behavior'"]


@bad_input("misspelt-item_di")
def _(folder):
    path = write(folder, events().rename({"item_id": "item_di"}))
    return [str(path), "'item_id' missing", "rename 'item_di' to 'item_id'"]


# wrong dtypes

@bad_input("float-user-id-parquet")
def _(folder):
    path = write(folder, events(user_id=[1.0, 2.0, 2.0, 3.5]))
    return [str(path), "'user_id'", "Float64", "integers or strings", "astype('int64')"]


@bad_input("float-item-id-csv")
def _(folder):
    path = write_text(folder, "user_id,item_id,behavior,ts\n1,10.5,click,1700000000\n")
    return [str(path), "'item_id'", "Float64", "integers or strings"]


@bad_input("boolean-behavior-parquet")
def _(folder):
    path = write(folder, events(behavior=[True, False, True, True]))
    return [str(path), "'behavior'", "Boolean", "use strings", ", ".join(S.BEHAVIORS)]


@bad_input("boolean-behavior-csv")
def _(folder):
    path = write_text(folder, "user_id,item_id,behavior,ts\n1,10,true,1700000000\n2,20,false,1700000000\n")
    return [str(path), "'behavior'", "Boolean", "use strings"]


@bad_input("list-item-id")
def _(folder):
    path = write(folder, events(item_id=[[10], [20], [10, 11], []]))
    return [str(path), "'item_id'", "List(Int64)", "integers or strings"]


@bad_input("list-behavior")
def _(folder):
    path = write(folder, events(behavior=[["click"], ["buy"], ["fav"], ["click"]]))
    return [str(path), "'behavior'", "List(String)", "use strings"]


@bad_input("list-ts")
def _(folder):
    path = write(folder, events(ts=[[T0], [T0], [T0], [T0]]))
    return [str(path), "'ts'", "List(Int64)", "epoch seconds"]


@bad_input("boolean-ts")
def _(folder):
    path = write(folder, events(ts=[True, False, True, True]))
    return [str(path), "'ts'", "Boolean", "epoch seconds"]


# nulls: one null in one column, in Parquet and in CSV (an empty field)

def _null_case(column: str, fmt: str):
    def build(folder):
        values = list(GOOD_EVENTS[column])
        values[1] = None
        path = write(folder, events(**{column: values}), fmt=fmt)
        return [str(path), f"column '{column}'", "1 null value(s)", "drop or fill those rows"]
    return build


for _column in S.EVENT_COLUMNS:
    for _fmt in ("parquet", "csv"):
        bad_input(f"null-{_column}-{_fmt}")(_null_case(_column, _fmt))


@bad_input("all-null-user-id-parquet")
def _(folder):
    # A column with nothing but nulls is stored with dtype Null: still reported as nulls.
    path = write(folder, events(user_id=[None] * 4))
    return [str(path), "column 'user_id'", "only null values"]


@bad_input("all-null-behavior-csv")
def _(folder):
    path = write_text(folder, "user_id,item_id,behavior,ts\n1,10,,1700000000\n2,20,,1700000000\n")
    return [str(path), "column 'behavior'", "null value(s)", "drop or fill"]


# timestamps

@bad_input("milliseconds-parquet")
def _(folder):
    path = write(folder, events(ts=[t * 1000 for t in GOOD_EVENTS["ts"]]))
    return [str(path), "column 'ts'", "milliseconds", "ts // 1000"]


@bad_input("milliseconds-csv")
def _(folder):
    path = write_text(folder, "user_id,item_id,behavior,ts\n1,10,click,1700000000123\n")
    return [str(path), "column 'ts'", "milliseconds", "max 1700000000123", "ts // 1000"]


@bad_input("negative-ts")
def _(folder):
    path = write(folder, events(ts=[-86400, T0, T0, T0]))
    return [str(path), "column 'ts'", "negative", "min -86400", "after 1970"]


@bad_input("datetime-before-1970")
def _(folder):
    path = write(folder, events(ts=[dt.datetime(1969, 12, 31)] * 4))
    return [str(path), "column 'ts'", "negative", "after 1970"]


@bad_input("nan-float-ts")
def _(folder):
    path = write(folder, events(ts=[float(T0), float("nan"), float(T0), float("inf")]))
    return [str(path), "column 'ts'", "2 NaN or infinite value(s)", "drop or fill"]


@bad_input("huge-float-ts")
def _(folder):
    path = write(folder, events(ts=[1e30, float(T0), float(T0), float(T0)]))
    return [str(path), "column 'ts'", "milliseconds"]


@bad_input("huge-uint64-ts")
def _(folder):
    path = write(folder, events(ts=pl.Series([2**64 - 1, T0, T0, T0], dtype=pl.UInt64)))
    return [str(path), "column 'ts'", "milliseconds"]


@bad_input("unparsable-string-ts")
def _(folder):
    path = write_text(folder, "user_id,item_id,behavior,ts\n1,10,click,2023-11-14T22:13:20\n"
                              "2,20,buy,yesterday\n")
    # The example quoted is the value that does not parse, not the first value.
    return [str(path), "column 'ts'", "not datetimes", "'yesterday'", "ISO 8601"]


# ids

@bad_input("uint64-ids-above-int64")
def _(folder):
    path = write(folder, events(item_id=pl.Series([2**64 - 1, 1, 2, 3], dtype=pl.UInt64)))
    return [str(path), "column 'item_id'", "above 2^63-1", "store them as strings"]


# behaviour vocabulary

@bad_input("unknown-behavior-pv")
def _(folder):
    path = write(folder, events(behavior=["pv", "click", "pv", "buy"]))
    return [str(path), "column 'behavior'", "unknown value(s) ['pv']", "allowed: " + ", ".join(S.BEHAVIORS),
            "recall data import"]


# empty tables

@bad_input("header-only-csv")
def _(folder):
    path = write_text(folder, "user_id,item_id,behavior,ts\n")
    return [str(path), "has no rows", "at least one event"]


@bad_input("header-only-parquet")
def _(folder):
    path = write(folder, events().head(0))
    return [str(path), "has no rows", "at least one event"]


@bad_input("zero-byte-csv")
def _(folder):
    path = write_text(folder, "")
    return [str(path), "cannot read", "valid csv file"]


# unreadable files

@bad_input("random-bytes-parquet")
def _(folder):
    path = folder / "events.parquet"
    path.write_bytes(random.Random(0).randbytes(600))
    return [str(path), "cannot read", "valid parquet file", "re-export"]


@bad_input("truncated-parquet")
def _(folder):
    path = write(folder, events())
    path.write_bytes(path.read_bytes()[:-20])
    return [str(path), "cannot read", "valid parquet file"]


@bad_input("ragged-csv")
def _(folder):
    # polars rejects a row with more fields than the header (a row with fewer is
    # padded with nulls, which then fails the null check instead).
    path = write_text(folder, GOOD_CSV + "3,30,click,1700000200,extra,fields\n")
    return [str(path), "cannot read", "valid csv file"]


@bad_input("unterminated-quote-csv")
def _(folder):
    path = write_text(folder, 'user_id,item_id,behavior,ts\n1,10,"click,1700000000\n')
    return [str(path), "cannot read", "valid csv file"]


# folders

@bad_input("missing-folder")
def _(folder):
    folder.rmdir()
    return [f"data folder '{folder}' does not exist", "recall data synth --out DIR"]


@bad_input("file-instead-of-folder")
def _(folder):
    folder.rmdir()
    write(folder.parent, events()).rename(folder)
    return [f"'{folder}' is a file, not a data folder", "events.parquet or events.csv"]


@bad_input("folder-without-events")
def _(folder):
    write(folder, pl.DataFrame({"item_id": [10, 20]}), name="items")
    return [f"no events table in '{folder}'", "expected events.parquet or events.csv",
            "columns user_id, item_id, behavior, ts"]


@bad_input("events-json-only")
def _(folder):
    (folder / "events.json").write_text('[{"user_id": 1, "item_id": 10, "behavior": "click", "ts": 1}]')
    return [f"no events table in '{folder}'", "events.parquet or events.csv"]


# side tables

@bad_input("items-duplicate-item-id")
def _(folder):
    write(folder, events())
    path = write(folder, pl.DataFrame({"item_id": [10, 20, 20, 30], "category_id": [1, 2, 2, 3]}), "items")
    return [str(path), "1 item_id(s) more than once", "keep one row per item"]


@bad_input("items-misnamed-item-id")
def _(folder):
    write(folder, events())
    path = write(folder, pl.DataFrame({"iid": [10, 20]}), "items")
    return [str(path), "'item_id' missing", "rename 'iid' to 'item_id'"]


@bad_input("items-float-category")
def _(folder):
    write(folder, events())
    path = write(folder, pl.DataFrame({"item_id": [10, 20], "category_id": [1.5, 2.0]}), "items")
    return [str(path), "column 'category_id'", "Float64", "use integers or strings"]


@bad_input("users-null-user-id")
def _(folder):
    write(folder, events())
    path = write(folder, pl.DataFrame({"user_id": [1, None, 3], "age": [20, 30, 40]}), "users", "csv")
    return [str(path), "column 'user_id'", "1 null value(s)", "drop or fill"]


@bad_input("users-duplicate-user-id")
def _(folder):
    write(folder, events())
    path = write(folder, pl.DataFrame({"user_id": [1, 1]}), "users")
    return [str(path), "user_id(s) more than once", "keep one row per user"]


@bad_input("items-header-only")
def _(folder):
    write(folder, events())
    path = write_text(folder, "item_id,category_id\n", "items.csv")
    return [str(path), "has no rows", "remove the file or add items"]


# id types differ between events and a side table: joins would silently match nothing

@bad_input("id-type-mismatch-items")
def _(folder):
    write(folder, events())  # integer item ids
    path = write(folder, pl.DataFrame({"item_id": ["10", "20", "30"]}), "items")
    return [str(path), "item_id as String", "events have Int64", "use the same id type in both files"]


@bad_input("id-type-mismatch-users")
def _(folder):
    write(folder, events(user_id=["u1", "u2", "u2", "u3"]))
    path = write(folder, pl.DataFrame({"user_id": [1, 2, 3]}), "users")
    return [str(path), "user_id as Int64", "events have String", "use the same id type"]


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_clear_recall_error(case: str, tmp_path: Path):
    folder = tmp_path / "data"
    folder.mkdir()
    fragments = BAD_INPUTS[case](folder)

    with pytest.raises(RecallError) as info:
        check_folder(folder)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert "\n" not in message  # one line: a message, not a dump

    assert_cli_rejects(folder, fragments)


# Real processes: what the user's terminal sees.

@pytest.mark.parametrize("case, fragment", [
    ("milliseconds-parquet", "milliseconds"),
    ("random-bytes-parquet", "cannot read"),
    ("id-type-mismatch-items", "same id type"),
])
def test_cli_subprocess_prints_error_without_traceback(case: str, fragment: str, tmp_path: Path):
    assert RECALL_EXE.exists(), f"console script not found at {RECALL_EXE}"
    folder = tmp_path / "data"
    folder.mkdir()
    BAD_INPUTS[case](folder)
    proc = subprocess.run([str(RECALL_EXE), "data", "check", str(folder)], capture_output=True,
                          text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert proc.stderr.startswith("error: "), proc.stderr
    assert fragment in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.count("error:") == 1


def test_read_table_rejects_unknown_suffix_and_missing_file(tmp_path: Path):
    path = tmp_path / "events.json"
    path.write_text("{}")
    with pytest.raises(RecallError, match=r"unsupported file type '\.json'; use \.parquet or \.csv"):
        read_table(path)
    with pytest.raises(RecallError, match="does not exist"):
        read_table(tmp_path / "nope.parquet")


# --------------------------------------------------------------------------------------
# Good inputs
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("2023-11-14T22:13:20", T0),
    ("2023-11-14 22:13:20", T0),
    ("2023-11-14T23:13:20+01:00", T0),  # offsets are honoured
    ("2023-11-14T22:13:20.900", T0),  # sub-second parts are floored
    ("2023-11-14", T0 - (22 * 3600 + 13 * 60 + 20)),  # a date is midnight UTC
])
def test_string_datetimes_parse_to_epoch_seconds(text: str, expected: int, tmp_path: Path):
    write_text(tmp_path, f"user_id,item_id,behavior,ts\n1,10,click,{text}\n2,20,buy,{text}\n")
    data = check_folder(tmp_path)
    assert data.events.schema[S.TS] == pl.Int64
    assert data.events[S.TS].to_list() == [expected, expected]


@pytest.mark.parametrize("series", [
    pl.Series([dt.datetime(2023, 11, 14, 22, 13, 20)] * 4, dtype=pl.Datetime("ms")),
    pl.Series([dt.datetime(2023, 11, 14, 22, 13, 20)] * 4, dtype=pl.Datetime("ns")),
    pl.Series([dt.datetime(2023, 11, 14, 22, 13, 20)] * 4).dt.replace_time_zone("UTC")
      .dt.convert_time_zone("Asia/Shanghai"),
], ids=["ms", "ns", "tz-aware"])
def test_datetime_dtype_ts_becomes_epoch_seconds(series: pl.Series, tmp_path: Path):
    write(tmp_path, events(ts=series))
    data = check_folder(tmp_path)
    assert data.events.schema[S.TS] == pl.Int64
    assert data.events[S.TS].to_list() == [T0] * 4


def test_date_dtype_ts_is_midnight_utc(tmp_path: Path):
    write(tmp_path, events(ts=[dt.date(2023, 11, 14)] * 4))
    assert check_folder(tmp_path).events[S.TS].to_list() == [1_699_920_000] * 4


def test_exact_duplicates_dropped_but_repeats_at_other_times_kept(tmp_path: Path, caplog):
    """Documented in ``normalise_events``: exact duplicate rows are logging double-writes
    and are dropped with a warning. The same user/item/behaviour at a different second
    is a real repeat (re-clicks, re-buys) and is kept."""
    frame = pl.DataFrame({
        "user_id": [1, 1, 1, 1, 2],
        "item_id": [10, 10, 10, 10, 10],
        "behavior": ["click", "click", "click", "buy", "click"],
        "ts": [T0, T0, T0 + 60, T0, T0],
    })
    path = write(tmp_path, frame)
    with caplog.at_level(logging.WARNING, logger="recall"):
        out = check_folder(tmp_path).events
    assert out.height == 4
    assert out.rows() == [(1, 10, "click", T0), (1, 10, "click", T0 + 60), (1, 10, "buy", T0), (2, 10, "click", T0)]
    assert f"'{path}': dropped 1 exact duplicate event row(s)" in caplog.text


def test_no_warning_without_duplicates(tmp_path: Path, caplog):
    write(tmp_path, events())
    with caplog.at_level(logging.WARNING, logger="recall"):
        check_folder(tmp_path)
    assert "duplicate" not in caplog.text


def test_string_ids_preserved(tmp_path: Path):
    frame = events(user_id=["007", "u2", "u2", "x"], item_id=["a-10", "0020", "a-10", "30"])
    write(tmp_path, frame)
    out = check_folder(tmp_path).events
    assert out.schema[S.USER] == pl.String and out.schema[S.ITEM] == pl.String
    assert out[S.USER].to_list() == ["007", "u2", "u2", "x"]  # leading zeros kept
    assert out[S.ITEM].to_list() == ["a-10", "0020", "a-10", "30"]


def test_string_ids_preserved_from_csv(tmp_path: Path):
    write_text(tmp_path, "user_id,item_id,behavior,ts\nu1,i10,click,1700000000\nu2,i20,buy,1700000000\n")
    out = check_folder(tmp_path).events
    assert out.schema[S.USER] == pl.String
    assert out[S.ITEM].to_list() == ["i10", "i20"]


def test_normalised_schema_column_order_and_extra_columns(tmp_path: Path):
    frame = events().select("ts", "behavior", "item_id", "user_id").with_columns(
        pl.col("user_id").cast(pl.UInt32), pl.col("ts").cast(pl.UInt64),
        pl.col("behavior").cast(pl.Categorical), page=pl.lit("home"))
    write(tmp_path, frame)
    out = check_folder(tmp_path).events
    assert out.columns == [*S.EVENT_COLUMNS, "page"]
    assert out.schema[S.USER] == pl.Int64 and out.schema[S.TS] == pl.Int64
    assert out.schema[S.BEHAVIOR] == BEHAVIOR_DTYPE
    assert out[S.BEHAVIOR].to_list() == GOOD_EVENTS["behavior"]


def test_float_seconds_are_floored(tmp_path: Path):
    write(tmp_path, events(ts=[T0 + 0.9, T0 + 1.0, T0 + 1.5, T0 + 2.0]))
    assert check_folder(tmp_path).events[S.TS].to_list() == [T0, T0 + 1, T0 + 1, T0 + 2]


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_folder_names_with_glob_characters_are_literal(fmt: str, tmp_path: Path):
    folder = tmp_path / "run[1]*?"
    folder.mkdir()
    write(folder, events(), fmt=fmt)
    assert check_folder(folder).events.height == 4
    result = runner.invoke(app, ["data", "check", str(folder)])
    assert result.exit_code == 0, (result.stdout, result.stderr)


def test_data_check_on_good_folder_prints_counts(tmp_path: Path):
    write(tmp_path, events())
    write(tmp_path, pl.DataFrame({"item_id": [10, 20, 40], "category_id": [1, 1, 2]}), "items")
    write(tmp_path, pl.DataFrame({"user_id": [1, 2, 3], "age": [20, 30, 40]}), "users", "csv")

    summary = summarise(check_folder(tmp_path))
    assert (summary["events"], summary["users"], summary["items"]) == (4, 3, 3)
    assert summary["item_coverage"] == round(2 / 3, 4) and summary["user_coverage"] == 1.0

    result = runner.invoke(app, ["data", "check", str(tmp_path)])
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    assert result.exception is None
    for key, value in (("events", 4), ("users", 3), ("items", 3), ("items_table_rows", 3)):
        assert re.search(rf"{key}\s*│\s*{value}\s*│", result.stdout), result.stdout
    assert result.stdout.rstrip().endswith("ok")
    assert result.stderr == ""


# --------------------------------------------------------------------------------------
# Property: normalise_events either returns the exact schema or raises RecallError.
# --------------------------------------------------------------------------------------

def _values(kind: str, n: int, nullable: bool):
    """A strategy for a Series of ``n`` values of one kind, with nulls if ``nullable``."""
    elements, dtype = {
        "int64": (st.integers(-(2**63), 2**63 - 1), pl.Int64),
        "small-int": (st.integers(0, 5), pl.Int64),
        "int32": (st.integers(-(2**31), 2**31 - 1), pl.Int32),
        "uint64": (st.integers(0, 2**64 - 1), pl.UInt64),
        "epoch": (st.integers(-10, S.MAX_EPOCH_SECONDS + 10), pl.Int64),
        "float": (st.floats(allow_nan=True, allow_infinity=True), pl.Float64),
        "epoch-float": (st.floats(-10, 2e11), pl.Float64),
        "bool": (st.booleans(), pl.Boolean),
        "text": (st.text(max_size=4), pl.String),
        "id-text": (st.sampled_from(["u1", "007", "", "x"]), pl.String),
        "behavior": (st.sampled_from(S.BEHAVIORS), pl.String),
        "behavior-or-pv": (st.sampled_from([*S.BEHAVIORS, "pv", "Click", ""]), pl.String),
        "behavior-categorical": (st.sampled_from(S.BEHAVIORS), pl.Categorical),
        "behavior-enum": (st.sampled_from(S.BEHAVIORS), BEHAVIOR_DTYPE),
        "iso-text": (st.datetimes(dt.datetime(1900, 1, 1), dt.datetime(2200, 1, 1))
                     .map(lambda d: d.isoformat(timespec="seconds")), pl.String),
        "mixed-text": (st.one_of(st.datetimes().map(str), st.dates().map(str), st.integers().map(str),
                                 st.text(max_size=3)), pl.String),
        "datetime": (st.datetimes(), pl.Datetime("us")),
        "date": (st.dates(), pl.Date),
        "list": (st.lists(st.integers(0, 3), max_size=2), pl.List(pl.Int64)),
        "null": (st.none(), pl.Null),
    }[kind]
    if nullable:
        elements = st.one_of(st.none(), elements)
    return st.lists(elements, min_size=n, max_size=n).map(lambda xs: pl.Series(xs, dtype=dtype))


GOOD_KINDS = {
    S.USER: ["small-int", "int32", "id-text"],
    S.ITEM: ["small-int", "uint64", "id-text"],
    S.BEHAVIOR: ["behavior", "behavior-categorical", "behavior-enum"],
    S.TS: ["epoch", "epoch-float", "iso-text", "datetime"],
}
ANY_KINDS = {
    S.USER: ["int64", "uint64", "float", "bool", "text", "date", "list", "null"],
    S.ITEM: ["int64", "uint64", "float", "bool", "text", "date", "list", "null"],
    S.BEHAVIOR: ["behavior-or-pv", "text", "bool", "small-int", "list", "null"],
    S.TS: ["int64", "uint64", "float", "text", "mixed-text", "date", "bool", "list", "null"],
}
# Chance (in tenths) that a column gets a plausible kind: high enough that many frames get
# through to the timestamp checks and that some pass, lower for ts where the edge cases are.
PLAUSIBLE_TENTHS = {S.USER: 8, S.ITEM: 8, S.BEHAVIOR: 8, S.TS: 4}


@st.composite
def event_frames(draw) -> pl.DataFrame:
    n = draw(st.integers(0, 6))
    columns = {}
    for name in S.EVENT_COLUMNS:
        plausible = draw(st.integers(0, 9)) < PLAUSIBLE_TENTHS[name]
        kind = draw(st.sampled_from(GOOD_KINDS[name] if plausible else ANY_KINDS[name]))
        nullable = draw(st.integers(0, 19)) == 0
        columns[name] = draw(_values(kind, n, nullable))
    if draw(st.integers(0, 19)) == 0:
        columns.pop(draw(st.sampled_from(S.EVENT_COLUMNS)))
    return pl.DataFrame(columns)


def test_normalise_events_returns_exact_schema_or_recall_error():
    outcomes = Counter()

    @settings(max_examples=400, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(event_frames())
    def check(frame: pl.DataFrame):
        try:
            out = normalise_events(frame, Path("events.parquet"))
        except RecallError as exc:
            assert "events.parquet" in str(exc)
            outcomes["error"] += 1
            return
        outcomes["ok"] += 1
        assert out.columns[:4] == list(S.EVENT_COLUMNS)
        assert out.schema[S.USER] in (pl.Int64, pl.String)
        assert out.schema[S.ITEM] in (pl.Int64, pl.String)
        assert out.schema[S.BEHAVIOR] == BEHAVIOR_DTYPE
        assert out.schema[S.TS] == pl.Int64
        assert out.select(pl.col(S.EVENT_COLUMNS).null_count()).row(0) == (0, 0, 0, 0)
        assert 1 <= out.height <= frame.height
        assert out[S.TS].min() >= 0 and out[S.TS].max() < S.MAX_EPOCH_SECONDS
        assert out.is_duplicated().sum() == 0

    check()
    # The property is only worth something if both branches were exercised.
    assert outcomes["ok"] > 0 and outcomes["error"] > 0, outcomes


def test_normalise_events_lazy_matches_eager():
    """A LazyFrame (the streaming import) gets the same checks, messages and rows as a DataFrame."""
    outcomes = Counter()

    def run(frame):
        try:
            out = normalise_events(frame, Path("events.parquet"))
        except RecallError as exc:
            return "error", str(exc)
        return "ok", out.collect() if isinstance(out, pl.LazyFrame) else out

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(event_frames())
    def check(frame: pl.DataFrame):
        eager, lazy = run(frame), run(frame.lazy())
        outcomes[eager[0]] += 1
        assert eager[0] == lazy[0], (eager, lazy)
        if eager[0] == "error":
            assert eager[1] == lazy[1]
        else:
            assert eager[1].equals(lazy[1])

    check()
    assert outcomes["ok"] > 0 and outcomes["error"] > 0, outcomes


def test_lazy_duplicates_found_across_user_partitions(monkeypatch, caplog):
    """The lazy path searches duplicates a partition of users at a time; the rows kept are unique()'s."""
    import recall.io as io

    rng = random.Random(3)
    rows = [(rng.randrange(6), rng.randrange(4), rng.choice(S.BEHAVIORS), T0 + rng.randrange(5)) for _ in range(300)]
    frame = pl.DataFrame(rows, schema=["user_id", "item_id", "behavior", "ts"], orient="row")
    monkeypatch.setattr(io, "DEDUP_PARTITION_ROWS", 40)  # 8 partitions
    with caplog.at_level(logging.WARNING, logger="recall"):
        lazy = normalise_events(frame.lazy(), Path("events.parquet")).collect()
    eager = normalise_events(frame, Path("events.parquet"))
    assert lazy.equals(eager) and eager.height < frame.height
    assert f"dropped {frame.height - eager.height} exact duplicate" in caplog.text
