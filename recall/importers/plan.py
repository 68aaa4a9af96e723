"""What an importer returns (a :class:`Plan` of lazy tables) and the two ways to run it.

- :func:`to_dataset` collects the plan into memory and normalises it: the
  :class:`~recall.io.Dataset` tests and small data sets use.
- :func:`write_plan` streams it into a data folder: events are sunk to Parquet
  and normalised from there by :func:`recall.io.normalise_events` on a lazy scan,
  so a log larger than memory is imported batch by batch; the side tables (one row
  per item or user) are collected. It also writes ``import.json``: the format,
  source, options, row counts, duplicates dropped and skipped bad lines.

Both run the same plan through the same normalisation, so a folder written by
:func:`write_plan` holds what :func:`to_dataset` returns.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import polars as pl

from recall.errors import RecallError
from recall.importers.text import Skipped
from recall.io import (
    TABLE_SUFFIXES,
    Dataset,
    check_id_types,
    normalise_events,
    normalise_items,
    normalise_users,
    summarise_tables,
)

log = logging.getLogger("recall")

METADATA = "import.json"
SIDE_TABLES = {"items": normalise_items, "users": normalise_users}


@dataclass
class Plan:
    """Lazy tables in the data contract's column names, before normalisation.

    ``events`` has ``user_id, item_id, behavior, ts`` (epoch seconds) and any
    extra columns; ``items`` / ``users`` are keyed by ``item_id`` / ``user_id``.
    ``files`` names the source file of each table (errors point there);
    ``skipped`` lists the bad lines dropped with ``on_bad_lines="skip"``.
    """

    events: pl.LazyFrame
    files: dict[str, Path]
    items: pl.LazyFrame | None = None
    users: pl.LazyFrame | None = None
    skipped: list[Skipped] = field(default_factory=list)

    def side_tables(self) -> dict[str, pl.LazyFrame]:
        return {name: table for name, table in (("items", self.items), ("users", self.users))
                if table is not None}


def _side_frames(plan: Plan) -> dict[str, pl.DataFrame]:
    """The side tables collected and normalised (they hold one row per item or user)."""
    return {name: SIDE_TABLES[name](table.collect(engine="streaming"), plan.files[name])
            for name, table in plan.side_tables().items()}


def to_dataset(plan: Plan) -> Dataset:
    """Collect a plan into a normalised, checked :class:`~recall.io.Dataset`."""
    events = normalise_events(plan.events.collect(engine="streaming"), plan.files["events"])
    data = Dataset(events=events, files=dict(plan.files), **_side_frames(plan))
    check_id_types(data)
    return data


@dataclass
class ImportReport:
    """What :func:`write_plan` wrote, with the summary printed by ``recall data import``."""

    out: Path
    written: dict[str, Path]
    summary: dict
    skipped: list[Skipped]
    duplicates: int
    metadata: Path


def _tmp(out: Path, name: str) -> Path:
    return out / f".{name}.{os.getpid()}.tmp.parquet"


def _rows(path: Path) -> int:
    return pl.scan_parquet(path).select(pl.len()).collect().item()


def _stage(plan: Plan, staged: dict[str, Path]) -> None:
    """Sink every table of the plan to its temporary Parquet file in ``staged``, in one pass.

    The sinks run together so that tables drawn from one source file (Taobao's
    items come from the events' lines) share a single scan of it.
    """
    tables = {"events": plan.events, **plan.side_tables()}
    pl.collect_all([frame.sink_parquet(staged[name], lazy=True) for name, frame in tables.items()],
                   engine="streaming")


def _sink_events(plan: Plan, staged: Path, sides: dict[str, pl.DataFrame], out: Path) -> tuple[Path, int]:
    """Normalise the staged events into ``out/events.parquet``; return it and the duplicates dropped.

    The normalisation (whose checks need a statistics pass) reads the staged
    Parquet file, not the source again.
    """
    source, final = plan.files["events"], _tmp(out, "events")
    try:
        events = normalise_events(pl.scan_parquet(staged), source)
        # Only schemas are compared, so an empty frame of the events' schema stands in for them.
        check_id_types(Dataset(events=pl.DataFrame(schema=events.collect_schema()), files=plan.files, **sides))
        events.sink_parquet(final)
        duplicates = _rows(staged) - _rows(final)
        path = out / "events.parquet"
        os.replace(final, path)
    finally:
        final.unlink(missing_ok=True)
    return path, duplicates


def _remove_stale(out: Path, written: dict[str, Path]) -> None:
    """A side table left from an earlier import into ``out`` would be read with the new events."""
    for name in SIDE_TABLES:
        for suffix in TABLE_SUFFIXES:
            stale = out / f"{name}{suffix}"
            if name in written or not stale.exists():
                continue
            if suffix != ".parquet":
                raise RecallError(f"'{stale}' would be read with the imported events, but this import has "
                                  f"no {name} table; move it away or import into an empty folder")
            stale.unlink()
            log.warning("removed '%s' left by an earlier import (this one has no %s table)", stale, name)


def write_plan(plan: Plan, out: str | Path, *, fmt: str, src: Path, options: dict[str, Any]) -> ImportReport:
    """Stream a plan into the data folder ``out`` (created) and record ``import.json``.

    Every table is staged to Parquet in one streaming pass; the side tables (one
    row per item or user) are then normalised in memory, the events lazily.
    """
    from recall.publish import write_parquet_atomic

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RecallError(f"--out '{out}' is a file; pass a folder to write the tables into")
    out.mkdir(parents=True, exist_ok=True)
    staged = {name: _tmp(out, f"{name}.raw") for name in ("events", *plan.side_tables())}
    try:
        _stage(plan, staged)
        sides = {name: SIDE_TABLES[name](pl.read_parquet(staged[name]), plan.files[name])
                 for name in plan.side_tables()}
        events_path, duplicates = _sink_events(plan, staged["events"], sides, out)
    finally:
        for path in staged.values():
            path.unlink(missing_ok=True)
    events = pl.scan_parquet(events_path)
    written = {"events": events_path}
    for name, frame in sides.items():
        written[name] = write_parquet_atomic(frame, out / f"{name}.parquet")
    _remove_stale(out, written)
    summary = summarise_tables(events, *(sides[n].lazy() if n in sides else None for n in SIDE_TABLES))
    meta = _write_metadata(out, {
        "format": fmt, "source": str(src), "options": options,
        "files": {name: str(path) for name, path in plan.files.items()},
        "rows": {"events": summary["events"], **{n: f.height for n, f in sides.items()}},
        "duplicates_dropped": duplicates,
        "skipped_lines": [s.as_json() for s in plan.skipped],
    })
    return ImportReport(out=out, written=written, summary=summary, skipped=plan.skipped,
                        duplicates=duplicates, metadata=meta)


def _write_metadata(out: Path, record: dict) -> Path:
    try:
        version = metadata.version("recall")
    except metadata.PackageNotFoundError:  # running from a checkout that is not installed
        version = "unknown"
    record = {**record, "recall_version": version,
              "imported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    path = out / METADATA
    tmp = path.with_name(f".{METADATA}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path
