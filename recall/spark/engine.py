"""``recall run --engine spark``: the counting channels, the merge and the filters as Spark jobs.

:func:`run_spark` mirrors :func:`recall.pipeline.run`: same inputs (the normalised
Parquet tables of ``data.dir``), same outputs (``i2i/<channel>.parquet``,
``channels/<channel>.parquet``, ``candidates.parquet``, ``hot/*``, ``u2u/usercf.parquet``,
``manifest.json``, ``_SUCCESS``), published atomically through
:func:`recall.publish.publish`.

Channels with a Spark implementation (:data:`SPARK_CHANNELS`): itemcf, swing, association,
usercf, retarget, crowd, ranki2i. Any other enabled channel (the embedding channels)
is trained by its local implementation on the driver, as in a local run, and its
tables are written into the same run and merged by Spark with the others; the
manifest lists it under ``engine.local_channels``. ``local_fallback=False`` refuses
such a config instead.

Tables are written by Spark straight into the private stage folder of the run,
each as a single Parquet file at the local engine's path (``spark.single_file``,
the default), or as a folder of part files under that same name that polars,
pyarrow and Spark read as one table. A table that a later step needs (an i2i
table for the trigger expansion, channel candidates for the merge) is read back
from the written file, so nothing is computed twice and nothing is cached.

On a cluster, ``data.dir`` and ``output.root`` must be one shared POSIX file
system mounted at the same path on the driver and on every executor (NFS, a
Lustre/GPFS mount...): publishing relies on rename, symlinks and file locks,
which object stores do not offer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from recall import schema as S
from recall.errors import RecallError
from recall.sections import SparkSettings

log = logging.getLogger("recall")

# Sort order of each published table (the local engine's row order).
ORDER = {"i2i": (S.ITEM, S.RANK), "channels": (S.USER, S.RANK), "u2u": (S.USER, S.RANK),
         "candidates.parquet": (S.USER, S.RANK)}


@dataclass
class TableWriter:
    """Writes Spark DataFrames into a publication and reads them back."""

    pub: object
    spark: object
    single_file: bool = True
    rows: dict[str, int] = field(default_factory=dict)

    def write(self, relative: str, frame, order: tuple[str, ...] | None = None):
        """Write ``frame`` to ``relative`` inside the run; return the table read back from disk."""
        from recall.spark.data import uri

        target = self.pub.path(relative)
        order = order or ORDER.get(relative.split("/")[0], ())
        if self.single_file:
            # One task writes the file (in the local engine's row order); the work before
            # the final shuffle stays parallel.
            folder = target.with_name(f".{target.name}.spark")
            try:
                frame.repartition(1).sortWithinPartitions(*order).write.mode("overwrite").parquet(uri(folder))
                parts = sorted(folder.glob("part-*"))
                if len(parts) != 1:
                    raise RecallError(f"Spark wrote {len(parts)} files for {relative}, expected one")
                os.replace(parts[0], target)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        else:
            frame.orderBy(*order).write.mode("overwrite").parquet(uri(target))
        self.rows[relative] = parquet_rows(target)
        self.pub.manifest.setdefault("tables", {})[relative] = self.rows[relative]
        return self.spark.read.parquet(uri(target))

    def remove(self, relatives) -> None:
        """Delete tables written earlier (a failed optional channel's), from the run and the manifest."""
        for relative in relatives:
            target = self.pub.path(relative)
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            self.rows.pop(relative, None)
            self.pub.manifest.get("tables", {}).pop(relative, None)

    def write_local(self, relative: str, frame, read_back: bool = False):
        """Write a polars frame (small tables, local-fallback channels); optionally return it as a Spark table."""
        from recall.spark.data import uri

        self.pub.write_table(relative, frame)
        self.rows[relative] = frame.height
        return self.spark.read.parquet(uri(self.pub.path(relative))) if read_back else None


def parquet_rows(path: Path) -> int:
    """Rows of a Parquet file or folder of part files, from the footers on the driver (no Spark job)."""
    import pyarrow.parquet as pq

    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


# ----------------------------------------------------------------------------- channels

ChannelJob = Callable[["SparkData", object, int, TableWriter, str], tuple[object, object | None]]


def _i2i_job(table_of) -> ChannelJob:
    """A channel defined by an i2i table: publish the table, then expand the triggers through it."""

    def job(data, params, n, writer: TableWriter, name: str):
        from recall.spark.triggers import expand_triggers

        i2i = writer.write(f"i2i/{name}.parquet", table_of(data, params, name))
        candidates = expand_triggers(data, i2i, n, i2i_rows=writer.rows[f"i2i/{name}.parquet"])
        return writer.write(f"channels/{name}.parquet", candidates), i2i

    return job


def _itemcf(data, p, name):
    from recall.spark.itemcf import itemcf_table

    return itemcf_table(data, p, name)


def _association(data, p, name):
    from recall.spark.association import association_table

    return association_table(data, p)


def _ranki2i(data, p, name):
    from recall.spark.ranki2i import ranki2i_table

    return ranki2i_table(data, p, name)


def _swing(data, p, name):
    from recall.spark.swing import swing_table

    return swing_table(data, p)


def _usercf(data, p, n, writer: TableWriter, name: str):
    from recall.channels.usercf import NEIGHBORS_TABLE
    from recall.spark.usercf import engagement_pairs, neighbour_table, usercf_candidates

    pairs = engagement_pairs(data, p)
    if p.publish_neighbors:
        neighbours = writer.write(NEIGHBORS_TABLE, neighbour_table(data, pairs, p))
    else:
        neighbours = neighbour_table(data, pairs, p)
    return writer.write(f"channels/{name}.parquet", usercf_candidates(data, pairs, neighbours, n)), None


def _retarget(data, p, n, writer: TableWriter, name: str):
    from recall.spark.retarget import retarget_candidates

    return writer.write(f"channels/{name}.parquet", retarget_candidates(data, p, n)), None


def _crowd(data, p, n, writer: TableWriter, name: str):
    from recall.spark.crowd import crowd_tables

    tables = crowd_tables(data, p, n, name)
    for relative, frame in tables.extra.items():
        writer.write_local(relative, frame)
    return writer.write(f"channels/{name}.parquet", tables.candidates), None


SPARK_CHANNELS: dict[str, ChannelJob] = {
    "itemcf": _i2i_job(_itemcf),
    "swing": _i2i_job(_swing),
    "usercf": _usercf,
    "ranki2i": _i2i_job(_ranki2i),
    "association": _i2i_job(_association),
    "retarget": _retarget,
    "crowd": _crowd,
}


# ----------------------------------------------------------------------------- the run

def settings_of(cfg, master: str | None = None, conf: dict[str, str] | None = None) -> SparkSettings:
    """The config's ``[spark]`` section (defaults when the config has none), with ``master`` and ``conf`` applied."""
    settings = cfg.spark
    update = {}
    if master:
        update["master"] = master
    if conf:
        update["conf"] = {**settings.conf, **conf}
    return settings.model_copy(update=update) if update else settings


def parse_spark_conf(pairs: list[str] | None) -> dict[str, str]:
    """``["spark.driver.memory=8g", ...]`` as a dict; a malformed entry is a RecallError."""
    conf = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise RecallError(f"--spark-conf '{pair}' is not key=value; e.g. --spark-conf spark.driver.memory=8g")
        conf[key] = value
    return conf


def run_spark(cfg, step=None, *, master: str | None = None, conf: dict[str, str] | None = None, spark=None,
              local_fallback: bool = True) -> dict:
    """Fit every enabled channel with Spark, merge, filter and publish all tables as one new run.

    Parameters
    ----------
    cfg : recall.config.Config
        The run configuration (its optional ``spark`` section: :class:`SparkSettings`).
    step : callable, optional
        ``step(name)`` progress context, as for :func:`recall.pipeline.run`.
    master : str, optional
        Spark master URL overriding ``spark.master`` (e.g. ``spark://host:7077``).
    conf : dict, optional
        Further ``spark.*`` settings for a session this call creates.
    spark : SparkSession, optional
        A session to use instead of creating one (tests, notebooks); it is left running.
    local_fallback : bool
        Train enabled channels without a Spark implementation locally on the driver
        (True) or refuse them with a RecallError (False).

    Returns
    -------
    dict
        The summary :func:`recall.pipeline.run` returns (run date, folder, per-channel
        rows, users, i2i rows, seconds, candidates by source, failures), plus ``engine``.

    The run skeleton is the local engine's (:func:`recall.pipeline.run_with`: lock,
    run date, optional channels' failures, manifest, publication); this module
    supplies the Spark steps (:class:`SparkEngine`).
    """
    import contextlib

    from recall.pipeline import run_with
    from recall.spark.session import require_pyspark

    names = cfg.enabled_channels()
    if cfg.merge.segment_quotas:
        raise RecallError("merge.segment_quotas is not supported by --engine spark yet: remove the "
                          "[merge.segment_quotas] tables from the config, or run the local engine")
    local_names = [name for name in names if name not in SPARK_CHANNELS]
    if local_names and not local_fallback:
        raise RecallError(f"channel(s) {', '.join(local_names)} have no Spark implementation (Spark runs "
                          f"{', '.join(SPARK_CHANNELS)}); disable them or let them train on the driver")
    require_pyspark()  # before any pyspark import: a missing install is a RecallError naming the fix
    engine = SparkEngine(settings_of(cfg, master, conf), spark, local_names)
    return run_with(engine, cfg, step or (lambda _: contextlib.nullcontext()))


class SparkEngine:
    """The Spark engine's steps in the run skeleton: session, data, channel jobs, merge and filters."""

    def __init__(self, settings: SparkSettings, spark=None, local_names: list[str] = ()) -> None:
        self.settings, self.spark, self.local_names = settings, spark, list(local_names)

    @contextlib.contextmanager
    def session(self, step):
        from pyspark.sql import SparkSession

        from recall.spark.session import spark_session

        # Stopped at the end only if this run starts it (a notebook's session is left alone).
        owned = self.spark is None and SparkSession.getActiveSession() is None
        with step("start spark"):
            self.spark = self.spark or spark_session(self.settings)
        try:
            yield
        finally:
            if owned:
                self.spark.stop()

    def load(self, cfg, step):
        from recall.spark.data import SparkData

        with step("load data"):
            return SparkData.load(self.spark, cfg.data.dir, triggers=cfg.triggers, seed=cfg.seed)

    def last_ts(self, data) -> int:
        return data.max_ts

    def prepare(self, cfg, data, failures: list[dict], step) -> None:
        """Nothing before publishing: Spark writes every table straight into the publication."""

    def produce(self, cfg, data, pub, failures: list[dict], step):
        from recall.pipeline import Produced, all_failed

        writer = TableWriter(pub, self.spark, single_file=self.settings.single_file)
        timings: dict[str, float] = {}
        channels = self._channels(cfg, data, writer, failures, timings, step)
        if not channels:
            raise all_failed(failures)
        with step("merge and filter"):
            started = time.perf_counter()
            final, removed = _merge_and_filter(cfg, data, channels, writer)
            timings["merge_and_filter"] = round(time.perf_counter() - started, 3)
        with step("summary"):
            summary = _summary(channels, writer, final, timings)
        pub.manifest.setdefault("timings_seconds", {}).update(timings)
        pub.manifest["filters_removed"] = removed
        return Produced(summary["channels"], summary["candidates"], {"engine": "spark"})

    def _channels(self, cfg, data, writer: TableWriter, failures: list[dict], timings: dict, step) -> dict:
        """Each enabled channel's candidates (read back from the run), Spark jobs or driver-trained."""
        from recall.pipeline import record_failure

        n = cfg.candidates_per_user + cfg.filters.reserve
        channels, train = {}, None
        for name in cfg.enabled_channels():
            with step(f"channel {name}"):
                started = time.perf_counter()
                written = set(writer.rows)
                try:
                    if name in SPARK_CHANNELS:
                        candidates, _ = SPARK_CHANNELS[name](data, cfg.channels[name], n, writer, name)
                    else:
                        log.info("%s has no Spark implementation; training it on the driver", name)
                        train = train or _local_train(cfg)
                        candidates = _local_channel(cfg, train, name, n, writer)
                except Exception as exc:  # any failure of an optional channel is tolerated
                    if name not in cfg.run.optional_channels:
                        raise
                    writer.remove(set(writer.rows) - written)  # no half-written channel in the run
                    failures.append(record_failure(f"channel:{name}", exc))
                    continue
                channels[name] = candidates
                timings[f"channel.{name}"] = round(time.perf_counter() - started, 3)
        return channels

    def manifest(self, data) -> dict:
        from recall.pipeline import input_fingerprints

        return {"inputs": input_fingerprints(data.files), "libraries": {"pyspark": self.spark.version},
                "engine": {"name": "spark", "master": self.spark.sparkContext.master, "spark": self.spark.version,
                           "single_file": self.settings.single_file, "local_channels": self.local_names}}

    def release(self, data) -> None:
        data.release()


def _merge_and_filter(cfg, data, channels: dict, writer: TableWriter):
    """Merge the channels' candidates under quotas, apply the filters, write ``candidates.parquet``.

    As :func:`recall.filters.filter_with_refill`: a user left short of the budget whose
    merge was cut at ``budget + reserve`` is merged again to full depth and filtered again.
    Returns the written table and how many rows each filter (and the budget cut) removed.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from recall.spark.filters import apply_filters
    from recall.spark.merge import merge_channels

    quotas = cfg.quotas()
    strict = {name for name in channels if cfg.channels[name].strict}
    budget = cfg.candidates_per_user
    depth = budget + cfg.filters.reserve

    def merge(frames: dict, rows: int):
        return merge_channels(frames, {k: quotas[k] for k in frames}, rows, strict=strict,
                              backfill=cfg.merge.backfill).persist(StorageLevel.MEMORY_AND_DISK)

    merged = merge(channels, depth)
    persisted = [merged]
    filtered, stages = apply_filters(merged, data, cfg.filters, budget)
    persisted += [v.persist(StorageLevel.MEMORY_AND_DISK) for v in stages.values()]
    given = merged.groupBy(S.USER).count().withColumnRenamed("count", "_given")
    kept = filtered.groupBy(S.USER).count().withColumnRenamed("count", "_kept")
    short = (given.join(kept, S.USER, "left").filter((F.col("_given") >= depth)
                                                      & (F.coalesce(F.col("_kept"), F.lit(0)) < budget))
             .select(S.USER).persist(StorageLevel.MEMORY_AND_DISK))
    persisted.append(short)
    removed = _removed(merged, stages, budget)
    if short.count():
        first = merged.join(F.broadcast(short), S.USER, "left_semi")
        _, first_stages = apply_filters(first, data, cfg.filters, budget)
        deeper_frames = {n: f.join(F.broadcast(short), S.USER, "left_semi") for n, f in channels.items()}
        every = sum(f.agg(F.max(S.RANK)).first()[0] or 0 for f in deeper_frames.values())  # all their candidates
        deeper = merge(deeper_frames, max(depth, every))
        persisted.append(deeper)
        refilled, again_stages = apply_filters(deeper, data, cfg.filters, budget)
        before, again = _removed(first, first_stages, budget), _removed(deeper, again_stages, budget)
        removed = {k: removed[k] - before[k] + again[k] for k in removed}
        filtered = filtered.join(F.broadcast(short), S.USER, "left_anti").unionByName(refilled)
    final = writer.write("candidates.parquet", filtered)
    for frame in persisted:
        frame.unpersist()
    return final, removed


def _removed(merged, stages: dict, budget: int) -> dict[str, int]:
    """Rows each filter step removed from ``merged`` (its :func:`apply_filters` stages); the over-cap
    rows demoted beyond the budget count as the diversity cap's, the other rows beyond it as the budget's."""
    from pyspark.sql import functions as F

    from recall.filters import DEMOTED

    removed, before = {}, merged.count()
    for name in ("purchase", "blacklist"):
        after = stages[name].count() if name in stages else before
        removed[name], before = before - after, after
    beyond = stages["ranked"].filter(F.col(S.RANK) > budget)
    removed["diversity"] = beyond.filter(F.col(DEMOTED)).count()
    removed["budget"] = beyond.count() - removed["diversity"]
    return removed


def _local_train(cfg):
    from recall.context import TrainData
    from recall.pipeline import load_data

    return TrainData.build(load_data(cfg), triggers=cfg.triggers, seed=cfg.seed)


def _local_channel(cfg, train, name: str, n: int, writer: TableWriter):
    from recall.pipeline import fit_model

    output = fit_model(name, cfg, train, n)
    if output.i2i is not None:
        writer.write_local(f"i2i/{name}.parquet", output.i2i)
    for relative, table in output.extra.items():
        writer.write_local(relative, table)
    return writer.write_local(f"channels/{name}.parquet", output.candidates, read_back=True)


def _summary(channels, writer: TableWriter, final, timings) -> dict:
    """Per-channel rows, users, i2i rows and seconds, and the merged candidates' rows, users and sources."""
    from pyspark.sql import functions as F

    # Distinct users of every channel table and of the merge, and the merge's rows per
    # source, in one job: groups (table, source) over the union of the written tables.
    parts = [final.select(F.lit("*merged").alias("_table"), S.USER, F.col("source").alias("_source"))]
    for name, frame in [("*users", final), *channels.items()]:
        parts.append(frame.select(F.lit(name).alias("_table"), S.USER, F.lit(None).cast("string").alias("_source")))
    union = parts[0]
    for part in parts[1:]:
        union = union.unionByName(part)
    counts = union.groupBy("_table", "_source").agg(F.countDistinct(S.USER).alias("_users"),
                                                    F.count(F.lit(1)).alias("_rows")).collect()
    users = {row["_table"]: row["_users"] for row in counts if row["_source"] is None}
    by_source = dict(sorted((row["_source"], row["_rows"]) for row in counts if row["_table"] == "*merged"))
    out = {}
    for name in channels:
        out[name] = {"rows": writer.rows[f"channels/{name}.parquet"], "users": users.get(name, 0),
                     "i2i_rows": writer.rows.get(f"i2i/{name}.parquet"),
                     "seconds": round(timings[f"channel.{name}"], 2)}
    return {"channels": out, "candidates": {"rows": writer.rows["candidates.parquet"],
                                            "users": users.get("*users", 0), "by_source": by_source}}


__all__ = ["SPARK_CHANNELS", "SparkEngine", "TableWriter", "parse_spark_conf", "run_spark", "settings_of"]
