"""Every configuration section model, and the TOML reading and layering: the bottom layer.

This module imports nothing of recall but :mod:`recall.errors` and :mod:`recall.schema`,
so every other module can import its section from here without a cycle. The whole
:class:`recall.config.Config` (these sections plus the channel sections, typed by each
channel's ``Params`` through the registry) and the loaders live one layer up, in
:mod:`recall.config`, next to the channel registry they need.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from recall import schema as S
from recall.errors import RecallError


class Strict(BaseModel):
    """Base for config sections: unknown keys are errors (typos must not pass silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PurchaseFilterConfig(Strict):
    """Personalised purchase filtering: a bought category is blocked for a per-category period."""

    enabled: bool = True
    default_period_days: float = Field(30.0, ge=0, description="blocking period of a category without its own")
    periods_days: dict[str, float] = Field(
        default_factory=dict, description="blocking period per category_id (keys are category ids as text)")
    estimate: bool = Field(False, description="estimate each category's period from repurchase intervals")
    min_period_days: float = Field(1.0, ge=0, description="lower clip of an estimated period")
    max_period_days: float = Field(180.0, ge=0, description="upper clip of an estimated period")
    min_intervals: int = Field(5, ge=1, description="repurchase intervals a category needs for an estimate")
    same_occasion_hours: float = Field(
        24.0, ge=0, description="buys in one category closer than this are one basket, not a repurchase")
    unblock_clicks: int = Field(3, ge=0, description="clicks in the category after the purchase that lift "
                                                     "the block (0: never lifted)")
    unblock_behaviors: list[str] = Field(default_factory=lambda: ["click"],
                                         description="behaviours that count as clicks for unblocking")

    @field_validator("periods_days")
    @classmethod
    def _non_negative(cls, value: dict[str, float]) -> dict[str, float]:
        bad = sorted(k for k, v in value.items() if v < 0)
        if bad:
            raise ValueError(f"periods must be >= 0 days (category {', '.join(bad)})")
        return value

    @field_validator("unblock_behaviors")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(S.BEHAVIORS))
        if unknown or not value:
            raise ValueError(f"unblock_behaviors must be a non-empty subset of {', '.join(S.BEHAVIORS)}")
        return value

    @model_validator(mode="after")
    def _clip_order(self):
        if self.min_period_days > self.max_period_days:
            raise ValueError("min_period_days must not exceed max_period_days")
        return self


class BlacklistConfig(Strict):
    """Items and categories never to recommend, listed in a file."""

    enabled: bool = False
    path: Path | None = Field(None, description="CSV or Parquet with an item_id and/or a category_id column")

    @model_validator(mode="after")
    def _path_when_enabled(self):
        if self.enabled and self.path is None:
            raise ValueError("filters.blacklist.path is required when the blacklist is enabled "
                             "(a CSV or Parquet file with item_id and/or category_id)")
        return self


class DiversityConfig(Strict):
    """Scattering: cap the candidates per category and per brand in a user's list (over-cap
    candidates are demoted below the others, not dropped; see :mod:`recall.filters`)."""

    enabled: bool = True
    max_per_category: int = Field(0, ge=0, description="most candidates of one category per user (0: no cap)")
    max_per_brand: int = Field(0, ge=0, description="most candidates of one brand per user (0: no cap)")


class FiltersConfig(Strict):
    """The mechanism filters run on the merged candidates (see :func:`apply_filters`)."""

    reserve: int = Field(100, ge=0, description="extra merged candidates per user beyond the budget, "
                                                "kept so filtered ones can be replaced")
    purchase: PurchaseFilterConfig = PurchaseFilterConfig()
    blacklist: BlacklistConfig = BlacklistConfig()
    diversity: DiversityConfig = DiversityConfig()


class SegmentsConfig(Strict):
    """Thresholds of the user segments of the evaluation (``[eval.segments]``)."""

    cold_max_items: int = Field(0, ge=0, description="users with at most this many distinct engaged items "
                                                     "in training are cold (0: only users without history)")
    light_max_items: int = Field(10, ge=0, description="users with more than cold_max_items and at most this "
                                                       "many items are light; more is heavy")

    @model_validator(mode="after")
    def _ordered(self):
        if self.light_max_items < self.cold_max_items:
            raise ValueError(f"light_max_items ({self.light_max_items}) must be at least cold_max_items "
                             f"({self.cold_max_items})")
        return self


class ALSConfig(Strict):
    """implicit's AlternatingLeastSquares baseline (``[eval.als]``), seeded with the run's seed."""

    enabled: bool = Field(True, description="run the ALS baseline in `recall eval`")
    factors: int = Field(64, ge=1, description="latent factors")
    iterations: int = Field(15, ge=1, description="ALS sweeps")
    regularization: float = Field(0.05, ge=0, description="L2 penalty on the factors")
    alpha: float = Field(1.0, gt=0, description="weight of the positive examples (implicit's confidence alpha)")


class TuneConfig(Strict):
    """How `recall tune` chooses per-channel quotas (``[tune]``); see :mod:`recall.tuning`."""

    validation_days: float | None = Field(None, gt=0, description="length of each validation window [T1, T2); "
                                                                 "the last ends where the evaluation's test "
                                                                 "window starts; default: eval.test_days")
    validation_windows: int = Field(2, ge=1, description="consecutive validation windows, latest first, "
                                                         "pooled (each with channels trained before it): "
                                                         "more windows, less noise, more fits")
    metric: Literal["recall", "ndcg", "hit_rate"] = Field("recall", description="merged metric to maximise")
    k: int | None = Field(None, ge=1, description="metric@K; default: the budget candidates_per_user")
    step: int = Field(10, ge=1, description="slots handed out per greedy step (the granularity of quotas)")
    min_quota: int = Field(0, ge=0, description="slots every enabled channel keeps whatever its gain")
    refine: bool = Field(True, description="after the greedy pass, move `step` slots between pairs of "
                                           "channels while that improves the metric (local search)")
    fixed: list[str] = Field(default_factory=list, description="channels that keep their configured quota "
                                                                "(e.g. a retargeting volume set by policy)")
    respect_strict: bool = Field(True, description="a strict channel (e.g. retarget) never gets more than its "
                                                   "configured quota: its volume is capped on purpose")
    min_z: float = Field(2.0, ge=0, description="keep the configured quotas unless the searched ones gain more "
                                                "than this many standard errors (paired over validation users)")
    segment_quotas: bool = Field(True, description="also search quotas of their own for light and heavy users "
                                                   "(merge.segment_quotas), kept where they gain beyond noise")
    min_segment_users: int = Field(50, ge=1, description="validation users a segment needs for its own quotas")
    search_params: bool = Field(True, description="also choose the crowd hot list's depth, ranking and "
                                                  "half-life on validation (recall/tuning.py)")


class SparkSettings(Strict):
    """How the Spark engine connects and what it asks for (the ``[spark]`` config section)."""

    master: str = Field("local[*]", description="Spark master URL: local[*], spark://host:7077, yarn, k8s://...")
    app_name: str = Field("recall", description="application name shown by the cluster manager")
    driver_memory: str = Field("4g", description="driver JVM heap (in local mode it also runs the tasks)")
    shuffle_partitions: int | None = Field(
        None, ge=1, description="spark.sql.shuffle.partitions; unset: 4 x cores in local mode, 200 otherwise")
    log_level: str = Field("ERROR", description="log4j level of the JVM side (ERROR, WARN, INFO)")
    single_file: bool = Field(
        True, description="write each table as one Parquet file, exactly the local layout; false writes a "
                          "folder <name>.parquet of part files in parallel (read as one table by polars, "
                          "pyarrow and Spark)")
    java_options: str = Field(
        "", description="extra JVM options of the driver and executors, e.g. -XX:TieredStopAtLevel=1 (quicker "
                        "start for short jobs); added to recall's own (the log configuration)")
    conf: dict[str, str] = Field(default_factory=dict, description="further spark.* settings, passed as given "
                                 "(extraJavaOptions are appended to recall's, not replacing them)")


class DataConfig(Strict):
    dir: Path = Path("data/sample")


class OutputConfig(Strict):
    root: Path = Path("out")
    run_date: str = Field("", description="YYYY-MM-DD; empty means the day after the last event")
    keep_runs: int = Field(7, ge=1, description="run dates kept; older ones are removed")
    on_lock: Literal["fail", "wait"] = Field(
        "fail", description="another run holds the output root's lock: fail at once (exit 1) or wait")
    lock_timeout_seconds: float = Field(
        3600.0, ge=0, description="with on_lock = \"wait\", give up (exit 1) after this long")
    superseded_grace_seconds: float = Field(
        600.0, ge=0, description="a version replaced by a re-run of its date stays this long for readers")

    @field_validator("run_date", mode="before")
    @classmethod
    def _toml_date(cls, value: Any) -> Any:
        """An unquoted TOML date (``run_date = 2024-01-02`` or ``--set output.run_date=2024-01-02``)."""
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return value.isoformat()
        return value

    @field_validator("run_date")
    @classmethod
    def _date(cls, value: str) -> str:
        if value:
            dt.date.fromisoformat(value)
        return value


class RunConfig(Strict):
    """How a run treats its parts."""

    optional_channels: list[str] = Field(
        default_factory=list,
        description="channels whose failure does not fail the run: it is logged as an error, recorded "
                    "under 'failures' in the manifest, and the run is published without them")
    shards: int = Field(
        1, ge=1, le=4096,
        description="user shards (stable hash of user_id): channels are fitted once, then recommendation, "
                    "merge, filters and writing stream one shard at a time, so per-user tables in memory "
                    "hold one shard; with more than 1, candidate tables are written as "
                    "'<table>.parquet/shard=<k>/part-0.parquet' folders (read as one dataset)")
    workers: int = Field(
        2, ge=1, le=64,
        description="channels fitted (and, per shard, recommended) at the same time, in threads; every "
                    "channel's tables are the same at any setting: channels share no random state, and "
                    "those that set process-wide state (the global torch generator) take turns")


class TriggerConfig(Strict):
    """How a user's recent behaviours become weighted triggers for i2i channels."""

    behavior_weights: dict[str, float] = Field(
        default_factory=lambda: {"impression": 0.0, "click": 1.0, "fav": 2.0, "cart": 3.0, "buy": 3.0}
    )
    half_life_days: float = Field(7.0, gt=0, description="recency decay of a trigger's weight")
    window_days: float = Field(30.0, gt=0, description="only behaviours this recent are triggers")
    max_triggers: int = Field(50, ge=1, description="strongest triggers kept per user")

    @field_validator("behavior_weights")
    @classmethod
    def _known_behaviors(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(S.BEHAVIORS))
        if unknown:
            raise ValueError(f"unknown behaviour(s) {unknown}; allowed: {', '.join(S.BEHAVIORS)}")
        return {b: float(value.get(b, 0.0)) for b in S.BEHAVIORS}


USER_SEGMENTS = ("cold", "light", "heavy")


class MergeConfig(Strict):
    """Blending channels: see :mod:`recall.merge`."""

    backfill: bool = Field(True, description="give slots a channel cannot fill to the others")
    user_batch: int = Field(2000, ge=1, description="users merged and filtered at a time: the merge's working "
                                                    "memory is one batch's candidates, not the shard's")
    workers: int = Field(2, ge=1, description="user batches merged and filtered in parallel threads; the "
                                              "result does not depend on it")
    light_max_items: int = Field(10, ge=1, description="segment quotas: users with 1..N distinct engaged items "
                                                       "are light, more are heavy, none cold")
    segment_quotas: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="slots per channel for a user segment (cold, light, heavy), e.g. "
                                          "[merge.segment_quotas.heavy] itemcf = 60; a segment not listed uses "
                                          "the channels' quotas (written by `recall tune`)")

    @field_validator("segment_quotas")
    @classmethod
    def _segments(cls, value: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
        unknown = sorted(set(value) - set(USER_SEGMENTS))
        if unknown:
            raise ValueError(f"unknown segment(s) {unknown}; segments are {', '.join(USER_SEGMENTS)}")
        if any(q < 0 for quotas in value.values() for q in quotas.values()):
            raise ValueError("segment quotas must be >= 0")
        return value


class EvalConfig(Strict):
    protocol: Literal["time", "user"] = Field(
        "time", description="time: global split, targets in [T, T + test_days) (users without history "
                            "included); user: T at split_quantile, each user with min_history_items is "
                            "scored on their next holdout_items new items after T (recall/split.py)")
    test_days: float = Field(1.0, gt=0, description="length of the test window after the split")
    split_ts: int | None = Field(None, description="epoch seconds; default: last test_days of the log")
    split_quantile: float = Field(0.8, gt=0, lt=1, description="user protocol: T at this quantile of event times")
    holdout_items: int = Field(5, ge=1, description="user protocol: each user's next N new items are the targets")
    min_history_items: int = Field(3, ge=1, description="user protocol: users need this many items before T")
    ks: list[int] = Field(default_factory=lambda: [10, 50, 100, 200])
    target_behaviors: list[str] = Field(default_factory=lambda: ["click", "fav", "cart", "buy"])
    exclude_seen_targets: bool = Field(
        True, description="drop test items the user already had in training (recall of new items)"
    )
    max_users: int | None = Field(None, ge=1, description="evaluate a seeded sample of test users")
    popularity_half_life_days: float | None = Field(
        None, gt=0, description="recency-decayed popularity baseline; default: the test window's length")
    ease_lambda: float = Field(200.0, gt=0, description="EASE baseline's L2 penalty")
    ease_max_items: int = Field(10_000, ge=0, description="EASE baseline on the most engaged items (0: off)")
    als: ALSConfig = ALSConfig()
    segments: SegmentsConfig = SegmentsConfig()


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=VALUE`` where VALUE is a TOML value (bare words are taken as strings)."""
    if "=" not in text:
        raise RecallError(f"override '{text}' must look like section.key=value, e.g. channels.itemcf.top_k=50")
    key, raw = text.split("=", 1)
    keys = key.strip().split(".")
    if not all(k.strip() for k in keys):
        raise RecallError(f"override '{text}' has an empty key; write it like channels.itemcf.top_k=50")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return [k.strip() for k in keys], value


def apply_overrides(raw: dict, overrides: list[str] | None) -> dict:
    """Set each ``dotted.key=value`` in a nested dict, creating sections as needed."""
    for text in overrides or []:
        keys, value = parse_override(text)
        node = raw
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise RecallError(f"override '{text}': '{key}' is not a section")
        node[keys[-1]] = value
    return raw


def read_toml(path: str | Path) -> dict:
    """One TOML config file as a dict; problems become a RecallError naming the file."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise RecallError(f"config file '{path}' does not exist; see configs/default.toml") from None
    except tomllib.TOMLDecodeError as exc:
        raise RecallError(f"config file '{path}' is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise RecallError(f"config file '{path}' is not UTF-8 text; save it as UTF-8 TOML") from None
    except OSError as exc:
        raise RecallError(f"cannot read config file '{path}' ({exc.strerror}); pass a readable TOML file") from None


# --- layered configuration: later files over earlier ones (e.g. a `recall tune` fragment over a base) ---

QUOTA_KEYS = ("quota", "share")


def merge_config_dicts(base: dict, layer: dict, _path: tuple[str, ...] = ()) -> dict:
    """``layer`` over ``base``: tables merge key by key, other values are replaced.

    Inside ``channels.<name>``, ``quota`` and ``share`` are one setting: a layer that
    sets either removes the other from below (a tuned ``quota`` replaces a base ``share``).
    """
    out = dict(base)
    if len(_path) == 2 and _path[0] == "channels" and any(k in layer for k in QUOTA_KEYS):
        for key in QUOTA_KEYS:
            out.pop(key, None)
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_config_dicts(out[key], value, (*_path, key))
        else:
            out[key] = value
    return out


def merge_config_files(paths: Sequence[str | Path]) -> dict:
    """Read TOML files and layer them in order, later files over earlier ones."""
    merged: dict = {}
    for path in paths:
        merged = merge_config_dicts(merged, read_toml(path))
    return merged
