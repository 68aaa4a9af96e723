"""The jobs behind the CLI: build channels, merge them, publish the run.

Each job holds the output root's lock from start to end (see :mod:`recall.publish`),
so two jobs on one root never interleave; ``output.on_lock`` says whether the
second fails at once or waits. A channel listed in ``run.optional_channels`` may
fail without failing the run: the failure is logged as an error and recorded in
the manifest (``failures``, ``status = "degraded"``), and the run is published
from the channels that worked.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import logging
import platform
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol
from importlib import metadata
from pathlib import Path

import numpy as np
import polars as pl

from recall import schema as S
from recall.channels import get_channel
from recall.config import Config
from recall.context import TrainData
from recall.errors import RecallError
from recall.filters import filter_with_refill, purchase_blocks
from recall.interface import Channel
from recall.io import Dataset, check_id_types, load_dataset
from recall.logs import event
from recall.merge import label_channels, merge_channels, user_batches
from recall.meter import StageMeter
from recall.publish import OutputLock, fault_point, output_lock, publish, resolve_run
from recall.shards import shard_of, user_shards
from recall.threads import in_threads

log = logging.getLogger("recall")
Step = Callable[[str], contextlib.AbstractContextManager]
LIBRARIES = ("recall", "polars", "numpy", "scipy", "implicit", "pyarrow", "pydantic")


def no_progress(_: str) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


def load_data(cfg: Config) -> Dataset:
    data = load_dataset(cfg.data.dir)
    check_id_types(data)
    return data


def default_run_date(last_ts: int) -> str:
    """The day after the last event (``last_ts``, epoch seconds, UTC): the tables serve that day."""
    last = dt.datetime.fromtimestamp(int(last_ts), tz=dt.timezone.utc).date()
    return (last + dt.timedelta(days=1)).isoformat()


@dataclass
class FittedChannel:
    """A channel fitted on all events, ready to recommend for any set of users.

    ``candidates`` holds its candidates for every user when the fit was asked for
    them (``n``), else None (a run recommends shard by shard).
    """

    name: str
    channel: Channel
    i2i: pl.DataFrame | None
    extra: dict[str, pl.DataFrame]
    seconds: float
    facts: dict = field(default_factory=dict)
    candidates: pl.DataFrame | None = None


def fit_model(name: str, cfg: Config, train: TrainData, n: int | None = None, *,
              tables: bool = True, users: np.ndarray | None = None) -> FittedChannel:
    """Fit one channel and build its user-independent tables (i2i, extras; not with ``tables``
    False, as evaluation and tuning read only candidates); with ``n``, also its candidates
    (``n`` per user) for every user, or for the sorted user indices ``users`` (the users
    evaluation scores: their rows are the same as when every user is recommended)."""
    channel = get_channel(name)(cfg.channels.get(name))
    started = time.perf_counter()
    channel.fit(train)
    fault_point(f"channel:{name}")
    # An embedding channel's i2i table is ~100 rows per catalogue item: seconds to rank and
    # convert, wasted on a fit whose tables nobody reads.
    i2i = channel.similar_items(train) if tables else None
    extra = channel.extra_tables(train) if tables else {}
    candidates = None if n is None else channel.recommend(train, n, users)
    return FittedChannel(name, channel, i2i, extra, time.perf_counter() - started, channel.facts(), candidates)


def fit_channels(cfg: Config, train: TrainData, names: Iterable[str], step: Step = no_progress,
                 n: int | None = None, *, recommend: bool = True, tables: bool = True,
                 failures: list[dict] | None = None, users: np.ndarray | None = None
                 ) -> dict[str, FittedChannel]:
    """Fit channels, each with its candidates for every user unless ``recommend`` is False (and
    its i2i and extra tables unless ``tables`` is False).

    Each lists the budget plus the filters' reserve unless ``n`` is given, for every user
    or for the sorted user indices ``users``. With a
    ``failures`` list, a channel in ``run.optional_channels`` that fails is recorded
    there and left out (:func:`tolerated`) instead of failing the call. ``run.workers``
    channels are fitted at a time, the costliest first (``Channel.fit_cost``); the
    result is keyed in the order of ``names`` and does not depend on the setting.
    """
    names = list(names)
    depth = (n or cfg.candidates_per_user + cfg.filters.reserve) if recommend else None

    def fit(name: str) -> FittedChannel | None:
        label = f"channel {name}" if recommend else f"fit {name}"
        tolerate = tolerated(cfg, f"channel:{name}", failures) if failures is not None else contextlib.nullcontext()
        with step(label), tolerate:
            return fit_model(name, cfg, train, depth, tables=tables, users=users)
        return None  # failed, and tolerated

    fitted = in_threads(fit, costliest_first(names), cfg.run.workers)
    return {name: fitted[name] for name in names if fitted[name] is not None}


def costliest_first(names: Iterable[str]) -> list[str]:
    """Channel names by ``Channel.fit_cost``, highest first (ties keep their order): started first on
    a thread pool, the long fits overlap everything else instead of ending last."""
    return sorted(names, key=lambda name: -get_channel(name).fit_cost)


def locked(cfg: Config) -> contextlib.AbstractContextManager[OutputLock]:
    """The output root's lock, taken as ``output.on_lock`` and ``output.lock_timeout_seconds`` say."""
    return output_lock(cfg.output.root, cfg.output.on_lock, cfg.output.lock_timeout_seconds)


def _publish(cfg: Config, lock: OutputLock, run_date: str, incremental: bool = False):
    return publish(cfg.output.root, run_date, incremental=incremental, keep_runs=cfg.output.keep_runs,
                   grace_seconds=cfg.output.superseded_grace_seconds, lock=lock)


def merge_outputs(cfg: Config, candidates: dict[str, pl.DataFrame], train: TrainData,
                  blocks: pl.DataFrame | None = None, *, unfiltered: bool = True
                  ) -> tuple[pl.DataFrame, pl.DataFrame | None, dict[str, int]]:
    """Merge under quotas with a reserve, then apply the mechanism filters down to the budget.

    Returns the filtered candidates, the unfiltered merge (budget only; None unless
    ``unfiltered``, which a run does not need) and how many candidates each filter
    removed. ``blocks`` are the purchase blocks if already
    computed (:func:`recall.filters.purchase_blocks`, shared by user shards). Users are
    merged and filtered in batches of ``merge.user_batch``, ``merge.workers`` at a time.
    """
    if blocks is None and cfg.filters.purchase.enabled:
        blocks = purchase_blocks(train, cfg.filters.purchase)  # every user's purchases: once, not per batch
    batches = user_batches(candidates, cfg.merge.user_batch)
    if len(batches) == 1:
        return _merge_batch(cfg, candidates, train, blocks, unfiltered)
    # The batches are independent (every step is per user), and numpy's sorts and
    # polars release the GIL, so threads use the cores; results keep the user order.
    results = list(in_threads(lambda k: _merge_batch(cfg, batches[k], train, blocks, unfiltered),
                              list(range(len(batches))), cfg.merge.workers).values())
    removed = {key: sum(r[2][key] for r in results) for key in results[0][2]}
    return (pl.concat([r[0] for r in results]), pl.concat([r[1] for r in results]) if unfiltered else None,
            removed)


def _merge_batch(cfg: Config, candidates: dict[str, pl.DataFrame], train: TrainData, blocks: pl.DataFrame | None,
                 unfiltered: bool = True) -> tuple[pl.DataFrame, pl.DataFrame | None, dict[str, int]]:
    """:func:`merge_outputs` on one batch of users."""
    strict = {name for name in candidates if cfg.channels[name].strict}
    budget = cfg.candidates_per_user
    parts = []
    for segment, users in segment_users(cfg, candidates, train):
        quotas = cfg.quotas(segment)
        chosen = candidates if users is None else {n: f.join(users, on=S.USER, how="semi")
                                                   for n, f in candidates.items()}
        parts.append((chosen, {n: quotas[n] for n in candidates}))

    def merge(depth: int | None, users: pl.Series | None) -> pl.DataFrame:
        """The segments' merges, ``depth`` rows per user (None: all of their candidates)."""
        merged = []
        for chosen, quotas in parts:
            if users is not None:
                chosen = {n: f.join(users.to_frame(S.USER), on=S.USER, how="semi") for n, f in chosen.items()}
            merged.append(merge_channels(chosen, quotas, depth or sum(f.height for f in chosen.values()),
                                         strict=strict, backfill=cfg.merge.backfill, labelled=False))
        return merged[0] if len(merged) == 1 else pl.concat(merged).sort(S.USER, S.RANK)

    fault_point("merge")
    filtered, merged, removed = filter_with_refill(merge, train, cfg.filters, budget, blocks)
    # The channels are named on the rows kept only (the merge carries their numbers through the filters).
    return (label_channels(filtered, candidates),
            label_channels(merged.filter(pl.col(S.RANK) <= budget), candidates) if unfiltered else None, removed)


def segment_users(cfg: Config, candidates: dict[str, pl.DataFrame], train: TrainData
                  ) -> list[tuple[str | None, pl.DataFrame | None]]:
    """The candidates' users split by segment when ``merge.segment_quotas`` is set, else one part (None).

    A user's segment is their number of distinct engaged items in training: none is
    cold, up to ``merge.light_max_items`` light, more heavy.
    """
    if not cfg.merge.segment_quotas:
        return [(None, None)]
    users = user_segments(train, pl.concat([f.select(S.USER) for f in candidates.values()]).unique(),
                          cfg.merge.light_max_items)
    return [(name, users.filter(pl.col("segment") == name).select(S.USER)) for name in ("cold", "light", "heavy")]


def user_segments(train: TrainData, users: pl.DataFrame, light_max_items: int) -> pl.DataFrame:
    """``user_id, segment``: cold (no engaged item in training), light (up to ``light_max_items``), heavy."""
    idx = train.user_index(users[S.USER])
    history = np.where(idx >= 0, np.diff(train.interactions.indptr)[np.maximum(idx, 0)], 0)
    segment = np.where(history == 0, "cold", np.where(history <= light_max_items, "light", "heavy"))
    return users.select(S.USER).with_columns(pl.Series("segment", segment, dtype=pl.String))


def fingerprint(path: Path) -> dict:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def input_fingerprints(files: dict[str, Path]) -> dict[str, dict]:
    """The manifest's ``inputs``: a fingerprint of each input file (a folder of part files: its path)."""
    return {name: fingerprint(Path(path)) if Path(path).is_file() else {"path": str(path)}
            for name, path in files.items()}


def stamp_manifest(pub, cfg: Config, inputs: dict | None, failures: list[dict] | None = None,
                   libraries: dict[str, str] | None = None, **extra) -> None:
    """Config, inputs, versions; and for a full run the failures of optional parts and the status.

    ``libraries`` adds engine versions to :func:`library_versions`; ``extra`` adds
    top-level manifest keys (the Spark engine's ``engine`` record).
    """
    if failures is not None:
        pub.manifest["failures"] = failures
        pub.manifest["status"] = "degraded" if failures else "complete"
    pub.manifest.update({
        "run_date": pub.run_date,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "seed": cfg.seed,
        "config": cfg.model_dump(mode="json"),
        "libraries": {**library_versions(), **(libraries or {})},
        **extra,
    })
    if inputs is not None:
        pub.manifest["inputs"] = inputs


def all_failed(failures: list[dict]) -> RecallError:
    """The error of a run none of whose enabled channels succeeded (each failure named)."""
    return RecallError("every enabled channel failed: " + "; ".join(
        f"{f['part']}: {f['error_type']}: {f['message']}" for f in failures))


def record_failure(part: str, exc: Exception, **where) -> dict:
    """The manifest record of an optional part's failure, logged as an error (call inside ``except``)."""
    name = part.split(":", 1)[1]
    failure = {"part": part, **where, "error_type": type(exc).__name__, "message": str(exc),
               "traceback": traceback.format_exc()}
    event(log, "channel.failed", f"optional channel '{name}' failed ({type(exc).__name__}: {exc}); "
          "the run is published without it", level=logging.ERROR,
          channel=name, error_type=failure["error_type"], error=failure["message"])
    return failure


@contextlib.contextmanager
def tolerated(cfg: Config, part: str, failures: list[dict], **where):
    """Let an optional channel's failure pass: record it in ``failures`` and log it as an error."""
    name = part.split(":", 1)[1]
    try:
        yield
    except Exception as exc:  # any failure of an optional part is tolerated
        if name not in cfg.run.optional_channels:
            raise
        failures.append(record_failure(part, exc, **where))


@dataclass
class RunTotals:
    """Row and user counts added up over user shards, for the summary."""

    channels: dict[str, dict] = field(default_factory=dict)
    merged: dict = field(default_factory=lambda: {"rows": 0, "users": 0, "by_source": {}})
    removed: dict[str, int] = field(default_factory=dict)

    def add_channel(self, name: str, frame: pl.DataFrame) -> None:
        row = self.channels.setdefault(name, {"rows": 0, "users": 0})
        row["rows"] += frame.height
        row["users"] += frame[S.USER].n_unique()  # shards hold disjoint users

    def add_merged(self, merged: pl.DataFrame, removed: dict[str, int]) -> None:
        self.merged["rows"] += merged.height
        self.merged["users"] += merged[S.USER].n_unique()
        for source, count in merged.group_by("source").len().iter_rows():
            self.merged["by_source"][source] = self.merged["by_source"].get(source, 0) + count
        for key, count in removed.items():
            self.removed[key] = self.removed.get(key, 0) + count


# ----------------------------------------------------------------------------- the run skeleton

@dataclass
class Produced:
    """What an engine's run wrote, for the summary: per-channel and merged row/user counts."""

    channels: dict[str, dict]
    merged: dict
    summary: dict = field(default_factory=dict)  # further summary keys (the engine's name)


class Engine(Protocol):
    """The steps an engine supplies to :func:`run_with`; the skeleton owns everything else.

    ``prepare`` runs before publishing (fits that need no output folder), ``produce``
    inside the publication (recommend, merge, filter, write the tables). Both record
    optional channels' failures in ``failures`` (:func:`tolerated`).
    """

    def session(self, step: Step) -> contextlib.AbstractContextManager: ...
    def load(self, cfg: Config, step: Step): ...
    def last_ts(self, data) -> int: ...
    def prepare(self, cfg: Config, data, failures: list[dict], step: Step) -> None: ...
    def produce(self, cfg: Config, data, pub, failures: list[dict], step: Step) -> Produced: ...
    def manifest(self, data) -> dict: ...
    def release(self, data) -> None: ...


def run_with(engine: Engine, cfg: Config, step: Step = no_progress) -> dict:
    """The one run skeleton of both engines: lock, data, run date, publication, failures, manifest, summary.

    Holds the output root's lock from start to end; the run date is
    ``output.run_date`` or the day after the last event; a channel in
    ``run.optional_channels`` may fail (recorded in the manifest, ``status =
    "degraded"``); if every enabled channel fails the run fails and nothing is published.
    """
    if not cfg.enabled_channels():
        raise RecallError("no channel is enabled; set channels.<name>.enabled = true in the config")
    failures: list[dict] = []
    with locked(cfg) as lock:
        fault_point("lock:acquired")
        with engine.session(step):
            data = engine.load(cfg, step)
            try:
                run_date = cfg.output.run_date or default_run_date(engine.last_ts(data))
                engine.prepare(cfg, data, failures, step)
                # One "publish" step spans the whole publication: tables are written as they are made.
                with step("publish"), _publish(cfg, lock, run_date) as pub:
                    produced = engine.produce(cfg, data, pub, failures, step)
                    stamp_manifest(pub, cfg, failures=failures, **engine.manifest(data))
            finally:
                engine.release(data)
    return {**summary(pub, produced.channels, produced.merged, failures), **produced.summary}


@dataclass
class LocalData:
    data: Dataset
    train: TrainData


class LocalEngine:
    """The local engine's steps: fit every channel once, then recommend, merge, filter and write
    shard by shard (``run.shards``), so the per-user tables in memory hold one shard. The
    manifest records every stage's time and peak memory (``stages``, :mod:`recall.meter`)."""

    def __init__(self) -> None:
        self.meter = StageMeter()
        self.models: dict[str, FittedChannel] = {}
        self.blocks: pl.DataFrame | None = None

    @contextlib.contextmanager
    def stage(self, step: Step, name: str, progress: str | None = None):
        with self.meter.stage(name), (step(progress or name) if progress != "" else contextlib.nullcontext()):
            yield

    def session(self, step: Step) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def load(self, cfg: Config, step: Step) -> LocalData:
        with self.stage(step, "load data"):
            data = load_data(cfg)
            return LocalData(data, TrainData.build(data, triggers=cfg.triggers, seed=cfg.seed))

    def last_ts(self, data: LocalData) -> int:
        return int(data.data.events[S.TS].max())

    def prepare(self, cfg: Config, data: LocalData, failures: list[dict], step: Step) -> None:
        stage = functools.partial(self.stage, step)
        self.models = fit_channels(cfg, data.train, cfg.enabled_channels(), stage, recommend=False,
                                   failures=failures)
        if not self.models:
            raise all_failed(failures)
        if cfg.filters.purchase.enabled:
            with stage("purchase blocks"):
                self.blocks = purchase_blocks(data.train, cfg.filters.purchase)

    def produce(self, cfg: Config, data: LocalData, pub, failures: list[dict], step: Step) -> Produced:
        train, models = data.train, self.models
        shards = user_shards(train.user_ids, cfg.run.shards)
        n = cfg.candidates_per_user + cfg.filters.reserve
        totals = RunTotals()
        recommend_seconds = dict.fromkeys(models, 0.0)
        with self.stage(step, "write model tables", progress=""):
            for model in models.values():
                _record_model(pub, model)
        for k, users in enumerate(shards):
            with step("recommend, merge and filter" + (f" (users shard {k + 1}/{len(shards)})"
                                                         if len(shards) > 1 else "")):

                def recommended(name: str) -> pl.DataFrame | None:
                    started = time.perf_counter()
                    try:
                        with self.stage(step, f"recommend {name}", progress=""), \
                                tolerated(cfg, f"channel:{name}", failures, shard=k):
                            return models[name].channel.recommend(train, n, users)
                        return None  # failed, and tolerated
                    finally:
                        recommend_seconds[name] += time.perf_counter() - started

                candidates = {name: frame for name, frame in in_threads(recommended, list(models), cfg.run.workers)
                              .items() if frame is not None}  # no other reference: freed after the shard
                for name in set(models) - set(candidates):
                    del models[name]  # failed: the remaining shards go on without it
                if not candidates:
                    raise all_failed(failures)
                with self.stage(step, "write candidates", progress=""):
                    for name, frame in candidates.items():
                        _write_table(pub, f"channels/{name}.parquet", frame, k, len(shards))
                        totals.add_channel(name, frame)
                # Written: the merge reads users, items and ranks only, so the scores (a
                # quarter of the candidates' memory) are freed before its working memory is taken.
                candidates = {name: frame.select(S.USER, S.ITEM, S.RANK) for name, frame in candidates.items()}
                with self.stage(step, "merge and filter", progress=""):
                    merged, _, removed = merge_outputs(cfg, candidates, train, self.blocks, unfiltered=False)
                del candidates
                with self.stage(step, "write candidates", progress=""):
                    _write_table(pub, "candidates.parquet", merged, k, len(shards))
                totals.add_merged(merged, removed)
                del merged
        timings = pub.manifest.setdefault("timings_seconds", {})
        for name, model in models.items():
            timings[f"channel.{name}"] = round(model.seconds + recommend_seconds[name], 3)
        timings["merge_and_filter"] = round(self.meter.stages["merge and filter"]["seconds"], 3)
        pub.manifest["filters_removed"] = totals.removed
        pub.manifest["shards"] = len(shards)
        pub.manifest.update(self.meter.report())
        channels = {name: {**totals.channels[name], "i2i_rows": None if m.i2i is None else m.i2i.height,
                           "seconds": round(m.seconds + recommend_seconds[name], 2)}
                    for name, m in models.items()}
        return Produced(channels, totals.merged)

    def manifest(self, data: LocalData) -> dict:
        return {"inputs": input_fingerprints(data.data.files)}

    def release(self, data: LocalData) -> None:
        pass


def run(cfg: Config, step: Step = no_progress) -> dict:
    """Fit every enabled channel, then recommend, merge, filter and publish shard by shard as one new run.

    The local engine (:class:`LocalEngine`) in the run skeleton (:func:`run_with`):
    channels are fitted once on all events; users are split into ``run.shards``
    shards (:mod:`recall.shards`), each shard's candidates go through the merge and
    filters and are written before the next shard starts.
    """
    return run_with(LocalEngine(), cfg, step)


def _record_model(pub, model: FittedChannel) -> None:
    if model.i2i is not None:
        pub.write_table(f"i2i/{model.name}.parquet", model.i2i)
    for relative, table in model.extra.items():
        pub.write_table(relative, table)
    if model.facts:
        pub.manifest.setdefault("channel_facts", {})[model.name] = model.facts


def _write_table(pub, relative: str, frame: pl.DataFrame, shard: int, n_shards: int) -> None:
    """A single file when unsharded, else one shard of a ``shard=<k>`` folder."""
    if n_shards == 1:
        pub.write_table(relative, frame)
    else:
        pub.write_shard(relative, shard, frame)


def build(cfg: Config, name: str, step: Step = no_progress) -> dict:
    """Fit one channel and publish its tables into the run date, keeping the other tables."""
    get_channel(name)
    with locked(cfg) as lock:
        fault_point("lock:acquired")
        with step("load data"):
            data = load_data(cfg)
            train = TrainData.build(data, triggers=cfg.triggers, seed=cfg.seed)
        run_date = cfg.output.run_date or default_run_date(int(data.events[S.TS].max()))
        with step(f"fit {name}"):
            model = fit_model(name, cfg, train)
        shards = user_shards(train.user_ids, cfg.run.shards)
        totals = RunTotals()
        with step("publish"), _publish(cfg, lock, run_date, incremental=True) as pub:
            _record_model(pub, model)
            for k, users in enumerate(shards):
                candidates = model.channel.recommend(train, cfg.candidates_per_user + cfg.filters.reserve, users)
                _write_table(pub, f"channels/{name}.parquet", candidates, k, len(shards))
                totals.add_channel(name, candidates)
            pub.manifest.setdefault("timings_seconds", {})[f"channel.{name}"] = round(model.seconds, 3)
            stamp_manifest(pub, cfg, input_fingerprints(data.files))
    channels = {name: {**totals.channels[name], "i2i_rows": None if model.i2i is None else model.i2i.height,
                       "seconds": round(model.seconds, 2)}}
    return summary(pub, channels, None)


def merge_published(cfg: Config, run_date: str | None = None, step: Step = no_progress) -> dict:
    """Merge the channel tables already published for a run date and publish the candidates.

    Channel tables written in user shards are read shard by shard (the run's shard
    count decides the layout), so memory holds one shard, as in :func:`run`.
    """
    with locked(cfg) as lock:
        fault_point("lock:acquired")
        run_dir = resolve_run(cfg.output.root, run_date or cfg.output.run_date or None)
        names = [n for n in cfg.enabled_channels() if (run_dir / "channels" / f"{n}.parquet").exists()]
        if not names:
            raise RecallError(f"no channel tables of enabled channels in '{run_dir}/channels'; "
                              "run 'recall build CHANNEL' first")
        with step("load data"):
            data = load_data(cfg)  # the purchase filter needs the event history
            train = TrainData.build(data, triggers=cfg.triggers, seed=cfg.seed)
        blocks = purchase_blocks(train, cfg.filters.purchase) if cfg.filters.purchase.enabled else None
        n_shards = cfg.run.shards
        totals = RunTotals()
        with step("merge and filter"), _publish(cfg, lock, run_dir.name.split(".")[0], incremental=True) as pub:
            for k in range(n_shards):
                candidates = {n: read_shard(run_dir / "channels" / f"{n}.parquet", k, n_shards) for n in names}
                merged, _, removed = merge_outputs(cfg, candidates, train, blocks, unfiltered=False)
                _write_table(pub, "candidates.parquet", merged, k, n_shards)
                totals.add_merged(merged, removed)
            pub.manifest["filters_removed"] = totals.removed
            stamp_manifest(pub, cfg, input_fingerprints(data.files))
    return summary(pub, {}, totals.merged)


def read_shard(path: Path, shard: int, n_shards: int) -> pl.DataFrame:
    """The rows of user shard ``shard`` of a published candidates table (a file or a shard folder)."""
    if path.is_dir() and (path / f"shard={shard}").is_dir() and \
            len([p for p in path.iterdir() if p.name.startswith("shard=")]) == n_shards:
        return pl.read_parquet(path / f"shard={shard}", hive_partitioning=False)
    frame = pl.read_parquet(path, hive_partitioning=False)
    if n_shards == 1:
        return frame
    return frame.filter(pl.Series(shard_of(frame[S.USER], n_shards) == shard))


def summary(pub, channels: dict[str, dict], merged: dict | None, failures: list[dict] | None = None) -> dict:
    """What the CLI prints: per-channel rows, users, seconds, and where the tables are."""
    result = {"run_date": pub.run_date, "published": str(pub.root / pub.run_date), "channels": channels,
              "failures": [{k: v for k, v in f.items() if k != "traceback"} for f in failures or []]}
    if merged is not None:
        result["candidates"] = {**merged, "by_source": dict(sorted(merged["by_source"].items()))}
    event(log, "run.published", f"run {pub.run_date} published under {result['published']}",
          run_date=pub.run_date, path=result["published"], version=pub.stage.name,
          rows=result.get("candidates", {}).get("rows"), failed=[f["part"] for f in result["failures"]])
    return result
