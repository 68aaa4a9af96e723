"""The Spark side of the I/O boundary: the normalised Parquet tables as checked DataFrames.

The Spark engine reads what :func:`recall.io.write_dataset` writes (``events``,
``items``, ``users`` as Parquet files, or folders of Parquet part files with those
names): ``user_id, item_id`` (Int64 or String), ``behavior`` (text, one of
:data:`recall.schema.BEHAVIORS`), ``ts`` (Int64 epoch seconds). The checks that
need the data run as one aggregation over the events; exact duplicate events are
dropped, as :func:`recall.io.normalise_events` does. CSV files and raw exports are
refused with the command that normalises them once (``recall data import``).

No item or user indices are built: the local engine's indices are the sorted
ids, so "ties go to the smaller index" is "ties go to the smaller id", which
Spark orders natively (integers numerically, strings by UTF-8 bytes as polars).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from recall import schema as S
from recall.sections import TriggerConfig
from recall.context import ENGAGED
from recall.errors import RecallError

ID_TYPES = ("bigint", "int", "smallint", "tinyint", "string")


def uri(path: str | Path) -> str:
    """A path as a URI for Spark: local paths become ``file://`` (never the cluster's default FS)."""
    text = str(path)
    # Not Path.as_uri(): Hadoop does not decode percent-escapes ('=' in hot/gender=F.parquet).
    return text if "://" in text else "file://" + str(Path(text).resolve())


def find_parquet(directory: Path, name: str) -> Path | None:
    path = directory / f"{name}.parquet"
    return path if path.exists() else None


@dataclass
class SparkData:
    """Events plus side tables as Spark DataFrames, with the reference time ``now``.

    ``now`` is one second after the last event, as in :meth:`recall.context.TrainData.build`.
    ``events`` is persisted: every channel reads it.
    """

    spark: object
    events: object
    now: int
    max_ts: int
    items: object | None = None
    users: object | None = None
    triggers: TriggerConfig = field(default_factory=TriggerConfig)
    files: dict[str, Path] = field(default_factory=dict)
    seed: int = 42  # of seeded samples (Swing's users per item), as ``TrainData.seed``

    @classmethod
    def load(cls, spark, directory: str | Path, triggers: TriggerConfig | None = None,
             seed: int = 42) -> "SparkData":
        """Read and check ``events`` (required), ``items`` and ``users`` (optional) from a data folder."""
        directory = Path(directory)
        if not directory.is_dir():
            raise RecallError(f"data folder '{directory}' does not exist (or is not a folder); create one "
                              "with 'recall data synth --out DIR' or 'recall data import FORMAT SRC --out DIR'")
        events_path = find_parquet(directory, "events")
        if events_path is None:
            found = "events.csv" if (directory / "events.csv").exists() else "no events table"
            raise RecallError(
                f"the Spark engine reads normalised Parquet and '{directory}' has {found}; convert it once "
                f"with 'recall data import generic {directory / 'events.csv'} --out DIR' (or run the local engine)")
        files = {"events": events_path}
        events = spark.read.parquet(uri(events_path))
        items = users = None
        if (items_path := find_parquet(directory, "items")) is not None:
            files["items"] = items_path
            items = spark.read.parquet(uri(items_path))
        if (users_path := find_parquet(directory, "users")) is not None:
            files["users"] = users_path
            users = spark.read.parquet(uri(users_path))
        return cls.from_frames(spark, events, items, users, triggers=triggers, files=files, seed=seed)

    @classmethod
    def from_dataset(cls, spark, data, triggers: TriggerConfig | None = None, seed: int = 42) -> "SparkData":
        """The same tables from an in-memory :class:`recall.io.Dataset` (tests, notebooks)."""
        import polars as pl

        def to_spark(frame: pl.DataFrame | None):
            if frame is None:
                return None
            # Enum/Categorical columns travel as plain text, as they do through Parquet.
            frame = frame.with_columns(pl.col(c).cast(pl.String) for c, t in frame.schema.items()
                                       if isinstance(t, (pl.Enum, pl.Categorical)))
            return spark.createDataFrame(frame.to_arrow())

        return cls.from_frames(spark, to_spark(data.events), to_spark(data.items), to_spark(data.users),
                               triggers=triggers, files=dict(data.files), seed=seed)

    @classmethod
    def from_frames(cls, spark, events, items=None, users=None, *, triggers: TriggerConfig | None = None,
                    files: dict[str, Path] | None = None, seed: int = 42) -> "SparkData":
        from pyspark import StorageLevel
        from pyspark.sql import functions as F

        files = files or {}
        where = lambda name: str(files.get(name, name))  # noqa: E731
        events = _checked_events(events, where("events"))
        for name, table, key in (("items", items, S.ITEM), ("users", users, S.USER)):
            if table is None:
                continue
            if key not in table.columns:
                raise RecallError(f"column '{key}' missing from '{where(name)}' (found: {', '.join(table.columns)})")
            side_type, event_type = dict(table.dtypes)[key], dict(events.dtypes)[key]
            if (side_type == "string") != (event_type == "string") or side_type not in ID_TYPES:
                raise RecallError(f"'{where(name)}' has {key} as {side_type} but the events have "
                                  f"{event_type}; use the same id type in both files")
            table = table.withColumn(key, F.col(key).cast(event_type))
            if name == "items":
                items = table
            else:
                users = table
        events = events.dropDuplicates(list(S.EVENT_COLUMNS)).persist(StorageLevel.MEMORY_AND_DISK)
        stats = events.agg(
            F.count(F.lit(1)).alias("rows"),
            F.min(S.TS).alias("ts_min"), F.max(S.TS).alias("ts_max"),
            F.sum(F.when(F.col(S.USER).isNull() | F.col(S.ITEM).isNull() | F.col(S.TS).isNull()
                         | F.col(S.BEHAVIOR).isNull(), 1).otherwise(0)).alias("nulls"),
            F.sum(F.when(~F.col(S.BEHAVIOR).isin(list(S.BEHAVIORS)), 1).otherwise(0)).alias("unknown"),
        ).first()
        path = where("events")
        if not stats["rows"]:
            events.unpersist()
            raise RecallError(f"'{path}' has no rows; an events table needs at least one event")
        problem = None
        if stats["nulls"]:
            problem = f"has {stats['nulls']} row(s) with a null user_id, item_id, behavior or ts; drop or fill them"
        elif stats["unknown"]:
            examples = [r[0] for r in events.filter(~F.col(S.BEHAVIOR).isin(list(S.BEHAVIORS)))
                        .select(S.BEHAVIOR).distinct().limit(5).collect()]
            problem = (f"has unknown behavior value(s) {sorted(examples)}; allowed: {', '.join(S.BEHAVIORS)} "
                       "(map them with 'recall data import')")
        elif stats["ts_max"] >= S.MAX_EPOCH_SECONDS:
            problem = f"has ts up to {stats['ts_max']}, which looks like milliseconds; convert to epoch seconds"
        elif stats["ts_min"] < 0:
            problem = f"has negative timestamps (min {stats['ts_min']}); use epoch seconds after 1970"
        if problem:
            events.unpersist()
            raise RecallError(f"'{path}' {problem}")
        max_ts = int(stats["ts_max"])
        return cls(spark=spark, events=events, now=max_ts + 1, max_ts=max_ts, items=items, users=users,
                   triggers=triggers or TriggerConfig(), files=files, seed=seed)

    def engaged_pairs(self):
        """Distinct ``user_id, item_id`` the user engaged with (click or deeper): never recommended again."""
        from pyspark.sql import functions as F

        return self.events.filter(F.col(S.BEHAVIOR).isin(list(ENGAGED))).select(S.USER, S.ITEM).distinct()

    def item_side(self, column: str):
        """``item_id, <column>`` as text (null where unknown), or None without that column."""
        if self.items is None or column not in self.items.columns:
            return None
        from pyspark.sql import functions as F

        return self.items.select(S.ITEM, F.col(column).cast("string").alias(column))

    def behavior_weights(self, weights: dict[str, float]):
        """A small ``behavior, bw`` table to broadcast-join onto events."""
        import pyarrow as pa
        from pyspark.sql import functions as F

        table = pa.table({S.BEHAVIOR: pa.array(list(weights), pa.string()),
                          "bw": pa.array([float(w) for w in weights.values()], pa.float64())})
        return F.broadcast(self.spark.createDataFrame(table))  # from Arrow: no Python workers

    def release(self) -> None:
        self.events.unpersist()


def _checked_events(events, path: str):
    """The four event columns with their canonical Spark types, or a RecallError naming the fix."""
    from pyspark.sql import functions as F

    missing = [c for c in S.EVENT_COLUMNS if c not in events.columns]
    if missing:
        raise RecallError(f"column(s) {', '.join(repr(c) for c in missing)} missing from '{path}' "
                          f"(found: {', '.join(events.columns)}); normalise the log with 'recall data import'")
    types = dict(events.dtypes)
    for column in (S.USER, S.ITEM):
        if types[column] not in ID_TYPES:
            raise RecallError(f"column '{column}' in '{path}' has type {types[column]}; ids must be integers "
                              "or strings (normalise the log with 'recall data import')")
    if types[S.BEHAVIOR] != "string":
        raise RecallError(f"column 'behavior' in '{path}' has type {types[S.BEHAVIOR]}; expected text, one of "
                          f"{', '.join(S.BEHAVIORS)}")
    if types[S.TS] in ("timestamp", "timestamp_ntz", "date"):
        ts = F.unix_timestamp(F.col(S.TS).cast("timestamp"))
    elif types[S.TS] in ("bigint", "int", "smallint", "tinyint"):
        ts = F.col(S.TS)
    else:
        raise RecallError(f"column 'ts' in '{path}' has type {types[S.TS]}; use epoch seconds (integer) "
                          "or a timestamp (normalise the log with 'recall data import')")

    def ident(column: str):
        return F.col(column).cast("string" if types[column] == "string" else "long").alias(column)

    return events.select(ident(S.USER), ident(S.ITEM), F.col(S.BEHAVIOR), ts.cast("long").alias(S.TS))


__all__ = ["SparkData", "uri"]
