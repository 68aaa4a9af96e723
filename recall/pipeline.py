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
import hashlib
import logging
import platform
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import polars as pl

from recall import schema as S
from recall.channels import get_channel
from recall.config import Config
from recall.context import TrainData
from recall.errors import RecallError
from recall.filters import apply_filters
from recall.io import Dataset, check_id_types, load_dataset
from recall.logs import event
from recall.merge import merge_channels
from recall.publish import OutputLock, fault_point, output_lock, publish, resolve_run

log = logging.getLogger("recall")
Step = Callable[[str], contextlib.AbstractContextManager]
LIBRARIES = ("recall", "polars", "numpy", "scipy", "implicit", "pyarrow", "pydantic")


def no_progress(_: str) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


@dataclass
class ChannelOutput:
    name: str
    candidates: pl.DataFrame
    i2i: pl.DataFrame | None
    seconds: float
    extra: dict[str, pl.DataFrame] = field(default_factory=dict)


def load_data(cfg: Config) -> Dataset:
    data = load_dataset(cfg.data.dir)
    check_id_types(data)
    return data


def default_run_date(data: Dataset) -> str:
    """The day after the last event (UTC): the tables serve that day."""
    last = dt.datetime.fromtimestamp(int(data.events[S.TS].max()), tz=dt.timezone.utc).date()
    return (last + dt.timedelta(days=1)).isoformat()


def fit_channel(name: str, cfg: Config, train: TrainData, n: int) -> ChannelOutput:
    """Fit one channel and produce its candidates (``n`` per user) and its i2i table if any."""
    params = cfg.channels.get(name)
    channel = get_channel(name)(params)
    started = time.perf_counter()
    channel.fit(train)
    fault_point(f"channel:{name}")
    candidates = channel.recommend(train, n)
    i2i = channel.similar_items(train)
    extra = channel.extra_tables(train)
    return ChannelOutput(name, candidates, i2i, time.perf_counter() - started, extra)


def fit_channels(cfg: Config, train: TrainData, names: Iterable[str], step: Step = no_progress,
                 n: int | None = None) -> dict[str, ChannelOutput]:
    """Fit channels; each lists the budget plus the filters' reserve unless ``n`` is given."""
    outputs = {}
    for name in names:
        with step(f"channel {name}"):
            outputs[name] = fit_channel(name, cfg, train, n or cfg.candidates_per_user + cfg.filters.reserve)
    return outputs


def fit_run_channels(cfg: Config, train: TrainData, names: Iterable[str], step: Step = no_progress
                     ) -> tuple[dict[str, ChannelOutput], list[dict]]:
    """Fit channels for a run; a failure of a channel in ``run.optional_channels`` is recorded, not raised.

    Returns the outputs of the channels that worked and one record per failure
    (``part``, ``error_type``, ``message``, ``traceback``) for the manifest.
    """
    optional = set(cfg.run.optional_channels)
    outputs, failures = {}, []
    for name in names:
        try:
            outputs.update(fit_channels(cfg, train, [name], step))
        except Exception as exc:  # any failure of an optional part is tolerated
            if name not in optional:
                raise
            failure = {"part": f"channel:{name}", "error_type": type(exc).__name__,
                       "message": str(exc), "traceback": traceback.format_exc()}
            failures.append(failure)
            event(log, "channel.failed", f"optional channel '{name}' failed ({type(exc).__name__}: {exc}); "
                  "the run is published without it", level=logging.ERROR,
                  channel=name, error_type=failure["error_type"], error=failure["message"])
    if not outputs:
        raise RecallError("every enabled channel failed: " + "; ".join(
            f"{f['part']}: {f['error_type']}: {f['message']}" for f in failures))
    return outputs, failures


def locked(cfg: Config) -> contextlib.AbstractContextManager[OutputLock]:
    """The output root's lock, taken as ``output.on_lock`` and ``output.lock_timeout_seconds`` say."""
    return output_lock(cfg.output.root, cfg.output.on_lock, cfg.output.lock_timeout_seconds)


def _publish(cfg: Config, lock: OutputLock, run_date: str, incremental: bool = False):
    return publish(cfg.output.root, run_date, incremental=incremental, keep_runs=cfg.output.keep_runs,
                   grace_seconds=cfg.output.superseded_grace_seconds, lock=lock)


def merge_outputs(cfg: Config, candidates: dict[str, pl.DataFrame], train: TrainData
                  ) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
    """Merge under quotas with a reserve, then apply the mechanism filters down to the budget.

    Returns the filtered candidates, the unfiltered merge (budget only) and how many
    candidates each filter removed.
    """
    quotas = cfg.quotas()
    strict = {name for name in candidates if cfg.channels[name].strict}
    budget = cfg.candidates_per_user
    merged = merge_channels(candidates, {n: quotas[n] for n in candidates}, budget + cfg.filters.reserve,
                            strict=strict, backfill=cfg.merge.backfill)
    fault_point("merge")
    filtered, removed = apply_filters(merged, train, cfg.filters, budget)
    return filtered, merged.filter(pl.col(S.RANK) <= budget), removed


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


def _record_channel(pub, output: ChannelOutput) -> None:
    pub.write_table(f"channels/{output.name}.parquet", output.candidates)
    if output.i2i is not None:
        pub.write_table(f"i2i/{output.name}.parquet", output.i2i)
    for relative, table in output.extra.items():
        pub.write_table(relative, table)
    pub.manifest.setdefault("timings_seconds", {})[f"channel.{output.name}"] = round(output.seconds, 3)


def _stamp_manifest(pub, cfg: Config, data: Dataset | None, failures: list[dict] | None = None) -> None:
    """Config, inputs, versions; and for a full run the failures of optional parts and the status."""
    if failures is not None:
        pub.manifest["failures"] = failures
        pub.manifest["status"] = "degraded" if failures else "complete"
    pub.manifest.update({
        "run_date": pub.run_date,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "seed": cfg.seed,
        "config": cfg.model_dump(mode="json"),
        "libraries": library_versions(),
    })
    if data is not None:
        pub.manifest["inputs"] = {name: fingerprint(path) for name, path in data.files.items()}


def run(cfg: Config, step: Step = no_progress) -> dict:
    """Fit every enabled channel, merge, and publish all tables as one new run."""
    names = cfg.enabled_channels()
    if not names:
        raise RecallError("no channel is enabled; set channels.<name>.enabled = true in the config")
    with locked(cfg) as lock:
        fault_point("lock:acquired")
        with step("load data"):
            data = load_data(cfg)
            train = TrainData.build(data, triggers=cfg.triggers, seed=cfg.seed)
        run_date = cfg.output.run_date or default_run_date(data)
        outputs, failures = fit_run_channels(cfg, train, names, step)
        with step("merge and filter"):
            started = time.perf_counter()
            merged, _, removed = merge_outputs(cfg, {n: o.candidates for n, o in outputs.items()}, train)
            merge_seconds = time.perf_counter() - started
        with step("publish"), _publish(cfg, lock, run_date) as pub:
            for output in outputs.values():
                _record_channel(pub, output)
            pub.write_table("candidates.parquet", merged)
            pub.manifest.setdefault("timings_seconds", {})["merge_and_filter"] = round(merge_seconds, 3)
            pub.manifest["filters_removed"] = removed
            _stamp_manifest(pub, cfg, data, failures)
    return summary(cfg, pub, outputs, merged, failures)


def build(cfg: Config, name: str, step: Step = no_progress) -> dict:
    """Fit one channel and publish its tables into the run date, keeping the other tables."""
    get_channel(name)
    with locked(cfg) as lock:
        fault_point("lock:acquired")
        with step("load data"):
            data = load_data(cfg)
            train = TrainData.build(data, triggers=cfg.triggers, seed=cfg.seed)
        run_date = cfg.output.run_date or default_run_date(data)
        outputs = fit_channels(cfg, train, [name], step)
        with step("publish"), _publish(cfg, lock, run_date, incremental=True) as pub:
            _record_channel(pub, outputs[name])
            _stamp_manifest(pub, cfg, data)
    return summary(cfg, pub, outputs, None)


def merge_published(cfg: Config, run_date: str | None = None, step: Step = no_progress) -> dict:
    """Merge the channel tables already published for a run date and publish the candidates."""
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
        with step("merge and filter"):
            candidates = {n: pl.read_parquet(run_dir / "channels" / f"{n}.parquet") for n in names}
            merged, _, removed = merge_outputs(cfg, candidates, train)
        with step("publish"), _publish(cfg, lock, run_dir.name.split(".")[0], incremental=True) as pub:
            pub.write_table("candidates.parquet", merged)
            pub.manifest["filters_removed"] = removed
            _stamp_manifest(pub, cfg, data)
    return summary(cfg, pub, {}, merged)


def summary(cfg: Config, pub, outputs: dict[str, ChannelOutput], merged: pl.DataFrame | None,
            failures: list[dict] | None = None) -> dict:
    """What the CLI prints: per-channel rows, users, seconds, and where the tables are."""
    channels = {}
    for name, out in outputs.items():
        channels[name] = {"rows": out.candidates.height, "users": out.candidates[S.USER].n_unique(),
                          "i2i_rows": None if out.i2i is None else out.i2i.height,
                          "seconds": round(out.seconds, 2)}
    result = {"run_date": pub.run_date, "published": str(pub.root / pub.run_date), "channels": channels,
              "failures": [{k: v for k, v in f.items() if k != "traceback"} for f in failures or []]}
    if merged is not None:
        result["candidates"] = {"rows": merged.height, "users": merged[S.USER].n_unique(),
                                "by_source": dict(merged.group_by("source").len().sort("source").iter_rows())}
    event(log, "run.published", f"run {pub.run_date} published under {result['published']}",
          run_date=pub.run_date, path=result["published"], version=pub.stage.name,
          rows=result.get("candidates", {}).get("rows"), failed=[f["part"] for f in result["failures"]])
    return result
