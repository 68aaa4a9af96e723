"""Fuzzed input files through ``recall data check`` and ``recall run``: a result or one clear error.

Hypothesis writes event tables (and items/users side tables) as CSV or Parquet
with the kinds of damage real logs have: wrong types, nulls, duplicates, huge
ids, strings as ids, unicode, negative or millisecond timestamps, unparsable
dates, empty tables, missing or misnamed columns, side tables that miss users
or items or use another id type, mixed-type id columns in CSV. The contract for
every case: exit code 0 with a readable published run, or exit code 1 with one
``error: ...`` line and no traceback; never exit 2, never an uncaught exception.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from recall import schema as S
from recall.cli import app
from recall.io import load_dataset
from recall.publish import MANIFEST, resolve_run

RECALL = Path(sys.executable).parent / "recall"
T0 = 1_700_000_000
# Every default channel, small, so each example runs in a fraction of a second.
CONFIG = """
seed = 3
candidates_per_user = 20
[channels.itemcf]
share = 0.3
top_k = 20
[channels.usercf]
share = 0.2
top_k_users = 10
[channels.ranki2i]
share = 0.2
top_k = 20
[channels.association]
share = 0.1
top_k = 20
[channels.crowd]
share = 0.1
top_k = 20
min_support = 2
min_users = 1
[channels.retarget]
quota = 5
strict = true
[filters]
reserve = 10
"""
runner = CliRunner()
FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


# ---------------------------------------------------------------- generated cases
# A case is a clean log plus one defect class (or "chaos": several at random).
# Each class has the outcome the data contract (README) promises: "ok" (runs),
# "error" (refused with exit 1), or "any" (either, but never a crash).

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)
JUNK = st.one_of(st.none(), st.integers(-(2**70), 2**70), st.floats(), st.booleans(), text,
                 st.datetimes(dt.datetime(1900, 1, 1), dt.datetime(2200, 1, 1)))
EXPECTED = {
    "clean": "ok", "duplicates": "ok", "string-ids": "ok", "unicode-ids": "ok", "negative-ids": "ok",
    "mixed-type-ids": "any", "iso-ts": "ok", "date-ts": "ok", "fractional-ts": "ok", "extra-column": "ok",
    "items-miss-items": "ok", "users-miss-users": "ok", "single-event": "ok",
    "null-ids": "error", "float-ids": "error", "bool-ids": "error", "huge-ids": "error",
    "millisecond-ts": "error", "negative-ts": "error", "nan-ts": "error", "huge-ts": "error",
    "garbage-ts": "error", "null-ts": "error", "unknown-behavior": "error", "int-behavior": "error",
    "null-behavior": "error", "empty-events": "error", "missing-column": "error", "renamed-column": "error",
    "duplicate-header": "error", "side-id-type-mismatch": "error", "side-duplicate-keys": "error",
    "empty-side-table": "error", "odd-side-attributes": "any", "chaos": "any",
}
CLASSES = sorted(EXPECTED)
RESHAPING = ("missing-column", "renamed-column", "empty-events")


@st.composite
def clean_log(draw) -> dict:
    n = draw(st.integers(2, 60))
    string_ids = draw(st.booleans())
    ids = (lambda hi: st.integers(0, hi).map(lambda i: f"u{i}")) if string_ids else (lambda hi: st.integers(0, hi))
    return {
        "user_id": draw(st.lists(ids(15), min_size=n, max_size=n)),
        "item_id": draw(st.lists(ids(25), min_size=n, max_size=n)),
        "behavior": draw(st.lists(st.sampled_from(S.BEHAVIORS), min_size=n, max_size=n)),
        "ts": draw(st.lists(st.integers(T0 - 10 * 86400, T0), min_size=n, max_size=n)),
    }


def _not_a_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return True
    return False


def side_table(key: str, keys: list, attributes: dict) -> dict:
    keys = list(dict.fromkeys(keys))
    return {key: keys, **{name: [make(i) for i in range(len(keys))] for name, make in attributes.items()}}


ITEM_ATTRS = {S.CATEGORY: lambda i: i % 4, S.BRAND: lambda i: i % 7}
USER_ATTRS = {"gender": lambda i: "fm"[i % 2], "age_band": lambda i: i % 3, "city": lambda i: f"c{i % 2}"}


def _on_ints(values: list, function) -> list:
    """``function`` applied to the (non-bool) integers; other values (earlier damage) kept."""
    return [function(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in values]


def _rows(draw, n: int) -> list[int]:
    if n == 0:
        return []
    return sorted(set(draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n))))


def _replace(draw, values: list, strategy) -> list:
    rows = _rows(draw, len(values))
    return [draw(strategy) if i in rows else v for i, v in enumerate(values)]


def apply_defect(draw, name: str, ev: dict, items: dict, users: dict, meta: dict) -> None:
    """Damage the clean tables in place with one defect class."""
    id_col = draw(st.sampled_from([S.USER, S.ITEM]))
    n = len(next(iter(ev.values()), []))  # in a chaos case, an earlier reshaping defect may have dropped ts
    if name == "duplicates" and n:
        picks = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=5))
        for col in ev:
            ev[col] = ev[col] + [ev[col][i] for i in picks]
    elif name == "string-ids":
        ev[id_col] = [f"id-{v}" for v in ev[id_col]]
        (items if id_col == S.ITEM else users)[id_col] = [f"id-{v}" for v in (items if id_col == S.ITEM else users)[id_col]]
    elif name == "unicode-ids":
        mapping = {v: f"u{draw(text)}{i}" for i, v in enumerate(dict.fromkeys(ev[id_col]))}
        ev[id_col] = [mapping[v] for v in ev[id_col]]
        side = items if id_col == S.ITEM else users
        side[id_col] = [mapping.get(v, f"u-extra{v}") for v in side[id_col]]
    elif name == "negative-ids":
        ev[id_col] = [-1 - v if isinstance(v, int) else v for v in ev[id_col]]
        side = items if id_col == S.ITEM else users
        side[id_col] = [-1 - v if isinstance(v, int) else v for v in side[id_col]]
    elif name == "mixed-type-ids":
        ev[id_col] = _replace(draw, ev[id_col], st.integers(0, 9) | text)
    elif name == "iso-ts":
        ev[S.TS] = _on_ints(ev[S.TS], lambda t: dt.datetime.fromtimestamp(t, dt.timezone.utc)
                            .replace(tzinfo=None).isoformat())
    elif name == "date-ts":
        ev[S.TS] = _on_ints(ev[S.TS], lambda t: dt.datetime.fromtimestamp(t, dt.timezone.utc).date())
    elif name == "fractional-ts":
        ev[S.TS] = _on_ints(ev[S.TS], lambda t: t + draw(st.floats(0, 0.999)))
    elif name == "extra-column":
        ev[draw(text.filter(lambda c: c not in ev and c.strip() == c and c))] = [draw(JUNK) for _ in range(n)]
    elif name == "items-miss-items":
        keep = _rows(draw, len(items[S.ITEM]))
        for col in items:
            items[col] = [v for i, v in enumerate(items[col]) if i in keep]
    elif name == "users-miss-users":
        keep = _rows(draw, len(users[S.USER]))
        for col in users:
            users[col] = [v for i, v in enumerate(users[col]) if i in keep]
    elif name == "duplicates":
        pass
    elif name == "single-event":
        for col in ev:
            ev[col] = ev[col][:1]
    elif name == "null-ids":
        ev[id_col] = _replace(draw, ev[id_col], st.none())
    elif name == "float-ids":
        ev[id_col] = [float(hash(v) % 100) + 0.5 for v in ev[id_col]]
    elif name == "bool-ids":
        ev[id_col] = [bool(hash(v) % 2) for v in ev[id_col]]
    elif name == "huge-ids":
        ev[id_col] = _replace(draw, [hash(v) % 100 for v in ev[id_col]], st.integers(2**63, 2**64 - 1))
    elif name == "millisecond-ts":
        ev[S.TS] = _on_ints(ev[S.TS], lambda t: t * 1000)
    elif name == "negative-ts":
        ev[S.TS] = _replace(draw, ev[S.TS], st.integers(-(10**10), -1))
    elif name == "nan-ts":
        ev[S.TS] = _replace(draw, _on_ints(ev[S.TS], float), st.sampled_from([math.nan, math.inf, -math.inf]))
    elif name == "huge-ts":
        ev[S.TS] = _replace(draw, ev[S.TS], st.integers(10**11, 2**64 - 1))
    elif name == "garbage-ts":
        ev[S.TS] = _replace(draw, [str(t) for t in ev[S.TS]], text.filter(_not_a_number))
    elif name == "null-ts":
        ev[S.TS] = _replace(draw, ev[S.TS], st.none())
    elif name == "unknown-behavior":
        ev[S.BEHAVIOR] = _replace(draw, ev[S.BEHAVIOR], st.sampled_from(["pv", "Click", " click", "like"])
                                  | text.filter(lambda s: s and s not in S.BEHAVIORS))
    elif name == "int-behavior":
        ev[S.BEHAVIOR] = [S.BEHAVIORS.index(b) if b in S.BEHAVIORS else 9 for b in ev[S.BEHAVIOR]]
    elif name == "null-behavior":
        ev[S.BEHAVIOR] = _replace(draw, ev[S.BEHAVIOR], st.none())
    elif name == "empty-events":
        for col in ev:
            ev[col] = []
        meta["zero_bytes"] = draw(st.booleans())
    elif name == "missing-column":
        del ev[draw(st.sampled_from(sorted(ev)))]
    elif name == "renamed-column":
        old = draw(st.sampled_from(sorted(ev)))
        ev[draw(st.sampled_from(["uid", "timestamp", "Behavior", "item", "user id"]))] = ev.pop(old)
    elif name == "duplicate-header":
        meta["duplicate_header"] = True
    elif name == "side-id-type-mismatch":
        side = items if id_col == S.ITEM else users
        side[id_col] = [f"x{v}" if isinstance(v, int) else 7 for v in side[id_col]]
    elif name == "side-duplicate-keys":
        side = items if id_col == S.ITEM else users
        for col in side:
            side[col] = side[col] + side[col][:1]
    elif name == "empty-side-table":
        side = items if id_col == S.ITEM else users
        for col in side:
            side[col] = []
    elif name == "odd-side-attributes":
        side = items if id_col == S.ITEM else users
        col = draw(st.sampled_from([c for c in side if c != id_col]))
        side[col] = [draw(JUNK) for _ in side[col]]
    elif name == "chaos":
        chosen = draw(st.lists(st.sampled_from([c for c in CLASSES if c != "chaos"]), min_size=2, max_size=4))
        for other in sorted(chosen, key=lambda c: c in RESHAPING):  # the others need the columns
            apply_defect(draw, other, ev, items, users, meta)


@st.composite
def cases(draw, classes=tuple(CLASSES)):
    """(class, tables, meta): the tables as column lists, meta the file-level damage."""
    name = draw(st.sampled_from(classes))
    ev = draw(clean_log())
    items = side_table(S.ITEM, ev[S.ITEM] + draw(st.lists(st.integers(100, 110), max_size=2)), ITEM_ATTRS)
    users = side_table(S.USER, ev[S.USER], USER_ATTRS)
    meta = {"duplicate_header": False, "zero_bytes": False}
    apply_defect(draw, name, ev, items, users, meta)
    with_items, with_users = draw(st.booleans()), draw(st.booleans())
    if name.startswith(("items-", "side-", "empty-side", "odd-side")):
        with_items = with_users = True
    return name, {"events": ev, "items": items if with_items else None,
                  "users": users if with_users else None}, meta


def expected_duplicates(ev: dict) -> int:
    rows = list(zip(*(ev[c] for c in S.EVENT_COLUMNS)))
    return len(rows) - len(set(rows))


# ---------------------------------------------------------------- writing files as a user would

def _csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return str(value)


def write_csv(path: Path, columns: dict, dup_header: bool = False) -> None:
    names = list(columns)
    header = names + names[:1] if dup_header and names else names
    n = len(next(iter(columns.values()))) if columns else 0
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for i in range(n):
            row = [_csv_cell(columns[c][i]) for c in names]
            writer.writerow(row + row[:1] if dup_header and names else row)


def _series(name: str, values: list) -> pl.Series:
    """A typed column; mixed or unrepresentable values are stored as text (as a pandas export would)."""
    kinds = {type(v) for v in values if v is not None}
    if len(kinds) <= 1:
        try:
            return pl.Series(name, values)
        except (OverflowError, TypeError, pl.exceptions.PolarsError):
            pass
    return pl.Series(name, [None if v is None else _csv_cell(v) for v in values], dtype=pl.String)


def write_parquet(path: Path, columns: dict) -> None:
    frame = pl.DataFrame([_series(name, values) for name, values in columns.items()])
    if len(set(columns)) < len(columns):  # pragma: no cover - dict keys are unique
        raise AssertionError
    frame.write_parquet(path)


def write_case(folder: Path, tables: dict, fmt: str, meta: dict) -> None:
    folder.mkdir(parents=True)
    for name, columns in tables.items():
        if columns is None:
            continue
        path = folder / f"{name}.{fmt}"
        if name == "events" and meta.get("zero_bytes"):
            path.write_bytes(b"")
        elif fmt == "csv":
            write_csv(path, columns, meta.get("duplicate_header", False) and name == "events")
        else:
            write_parquet(path, columns)


# ---------------------------------------------------------------- the contract

def assert_contract(result, what: str) -> None:
    """Exit 0, or exit 1 with an ``error:`` line; anything else (exit 2, an escaped exception) fails."""
    if result.exit_code == 2:
        path = result.stderr.split("traceback written to ")[-1].split(";")[0]
        trace = Path(path).read_text() if Path(path).is_file() else result.stderr
        pytest.fail(f"{what}: internal error\n{trace}")
    assert result.exception is None or isinstance(result.exception, SystemExit), (what, result.exception)
    assert result.exit_code in (0, 1), (what, result.output)
    assert "Traceback" not in result.output, (what, result.output)
    if result.exit_code == 1:  # after any progress lines: exactly one error line
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, (what, result.output)


def check_and_run(folder: Path, config: Path):
    """``recall data check`` then ``recall run`` on a folder; both must keep the contract."""
    check = runner.invoke(app, ["data", "check", str(folder)])
    assert_contract(check, "data check")
    out = folder.parent / "out"
    run = runner.invoke(app, ["run", "-c", str(config), "--data", str(folder), "--out", str(out),
                              "--run-date", "2024-01-01"])
    assert_contract(run, "run")
    if check.exit_code == 1:
        assert run.exit_code == 1, "run must refuse what data check refuses"
    if run.exit_code == 0:  # the published run reads back, consistent with its manifest
        version = resolve_run(out)
        manifest = json.loads((version / MANIFEST).read_text())
        for table, rows in manifest["tables"].items():
            assert pl.read_parquet(version / table).height == rows, table
        candidates = pl.read_parquet(version / "candidates.parquet")
        assert candidates.schema[S.USER] == load_dataset(folder).events.schema[S.USER]
    return check, run


def expected(name: str, fmt: str) -> str:
    if name == "duplicate-header" and fmt == "parquet":
        return "ok"  # a Parquet file cannot repeat a column name: the case is the clean log
    return EXPECTED[name]


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fuzz") / "config.toml"
    path.write_text(CONFIG)
    return path


def fuzz_case(config: Path, case, fmt: str, outcomes: Counter) -> None:
    name, tables, meta = case
    base = Path(tempfile.mkdtemp(prefix="recall-fuzz-"))
    try:
        write_case(base / "data", tables, fmt, meta)
        check, run = check_and_run(base / "data", config)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    want = expected(name, fmt)
    got = "ok" if (check.exit_code, run.exit_code) == (0, 0) else "error"
    outcomes[(name, fmt, got)] += 1
    if want != "any":
        assert got == want, f"{name} as {fmt}: expected {want}, got {got}:\n{check.output}\n{run.output}"
    if name in ("clean", "duplicates") and not meta["duplicate_header"]:
        dropped = expected_duplicates(tables["events"])  # counted on the raw rows: the oracle
        if dropped:
            assert f"dropped {dropped} exact duplicate event row(s)" in check.stderr, check.stderr
        else:
            assert "duplicate" not in check.stderr


def test_fuzzed_tables_through_check_and_run(config):
    outcomes: Counter = Counter()

    @FUZZ
    @given(cases(), st.sampled_from(["csv", "parquet"]))
    def check(case, fmt):
        fuzz_case(config, case, fmt, outcomes)

    check()
    got = Counter(g for (_, _, g) in outcomes.elements())
    assert got["ok"] > 0 and got["error"] > 0, outcomes  # both branches exercised


@pytest.mark.slow
@pytest.mark.parametrize("name", CLASSES)
def test_every_bad_input_class_many_times(config, name):
    outcomes: Counter = Counter()

    @settings(FUZZ, max_examples=30, derandomize=False)
    @given(cases(classes=(name,)), st.sampled_from(["csv", "parquet"]))
    def check(case, fmt):
        fuzz_case(config, case, fmt, outcomes)

    check()


# ---------------------------------------------------------------- a handful through the installed command

def _clean(n: int = 30) -> dict:
    return {"user_id": [i % 7 for i in range(n)], "item_id": [(i * 3) % 11 for i in range(n)],
            "behavior": [S.BEHAVIORS[i % 5] for i in range(n)], "ts": [T0 - 3600 * i for i in range(n)]}


def _with(**columns) -> dict:
    return {**_clean(), **columns}


SUBPROCESS_CASES = {
    # name: (command, format, tables, meta, exit code, text expected on stderr)
    "duplicates": ("check", "csv", {"events": {k: v + v[:2] for k, v in _clean().items()}}, {}, 0,
                   "dropped 2 exact duplicate event row(s)"),
    "duplicates-run": ("run", "parquet", {"events": {k: v + v[:2] for k, v in _clean().items()}}, {}, 0,
                       "dropped 2 exact duplicate event row(s)"),
    "millisecond-ts": ("check", "csv", {"events": _with(ts=[t * 1000 for t in _clean()["ts"]])}, {}, 1,
                       "looks like milliseconds"),
    "null-ids": ("check", "parquet", {"events": _with(user_id=[None] + _clean()["user_id"][1:])}, {}, 1,
                 "null value(s)"),
    "zero-byte-file": ("check", "csv", {"events": _clean()}, {"zero_bytes": True}, 1, "cannot read"),
    "huge-ids": ("check", "csv", {"events": _with(item_id=[2**63] + _clean()["item_id"][1:])}, {}, 1,
                 "above 2^63-1"),
    "duplicate-header": ("check", "csv", {"events": _clean()}, {"duplicate_header": True}, 1,
                         "more than once in its header"),
    "side-id-type": ("run", "csv", {"events": _clean(), "items": {"item_id": [f"x{i}" for i in range(11)]}}, {},
                     1, "use the same id type in both files"),
}


def test_bad_input_through_the_installed_command(tmp_path, config):
    procs = {}
    for name, (command, fmt, tables, meta, _, _) in SUBPROCESS_CASES.items():
        folder = tmp_path / name / "data"
        write_case(folder, tables, fmt, {"duplicate_header": False, "zero_bytes": False, **meta})
        argv = (["data", "check", str(folder)] if command == "check" else
                ["run", "-c", str(config), "--data", str(folder), "--out", str(tmp_path / name / "out")])
        procs[name] = subprocess.Popen([str(RECALL), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True)
    for name, proc in procs.items():
        _, stderr = proc.communicate(timeout=120)
        code, text_ = SUBPROCESS_CASES[name][4:]
        assert proc.returncode == code, (name, stderr)
        assert text_ in stderr and "Traceback" not in stderr, (name, stderr)
        if code == 1:
            assert [line for line in stderr.splitlines() if line.startswith("error: ")], (name, stderr)
