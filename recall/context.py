"""What every channel trains on: the events indexed to contiguous integers, plus shared matrices."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from recall import schema as S
from recall.sections import TriggerConfig
from recall.decay import DAY, halving
from recall.io import Dataset

UIDX = "user_idx"
IIDX = "item_idx"
# Behaviours that mean the user engaged with the item (an impression alone does not).
ENGAGED = ("click", "fav", "cart", "buy")


class _Slot:
    """One shared value of a :class:`TrainData` and the lock its first build holds."""

    def __init__(self):
        self.lock = threading.Lock()
        self.built, self.value = False, None


@dataclass
class TrainData:
    """Training events with ``user_idx`` / ``item_idx`` columns and the id lookups.

    ``now`` is the reference time for recency: the split time in evaluation, or
    one second after the last event in a production run.
    """

    events: pl.DataFrame
    user_ids: pl.Series
    item_ids: pl.Series
    now: int
    triggers: TriggerConfig = field(default_factory=TriggerConfig)
    items: pl.DataFrame | None = None
    users: pl.DataFrame | None = None
    seed: int = 42
    _shared: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _shared_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def shared(self, key: Any, build: Callable[[], Any]) -> Any:
        """``build()``, once per ``key`` for this training data, then shared by every caller.

        Channels fitted in parallel threads (``run.workers``) that ask for the same
        value at the same time wait for the one build instead of each making it.
        """
        with self._shared_lock:
            slot = self._shared.setdefault(key, _Slot())
        with slot.lock:
            if not slot.built:
                slot.value, slot.built = build(), True
        return slot.value

    @classmethod
    def build(cls, data: Dataset, now: int | None = None, triggers: TriggerConfig | None = None,
              seed: int = 42) -> "TrainData":
        """Index users and items (events plus side tables, so cold items get an index too)."""
        events = data.events
        user_ids = events[S.USER] if data.users is None else pl.concat([events[S.USER], data.users[S.USER]])
        item_ids = events[S.ITEM] if data.items is None else pl.concat([events[S.ITEM], data.items[S.ITEM]])
        user_ids = user_ids.unique().sort()
        item_ids = item_ids.unique().sort()
        events = (events
                  .join(pl.DataFrame({S.USER: user_ids, UIDX: np.arange(user_ids.len(), dtype=np.int32)}),
                        on=S.USER)
                  .join(pl.DataFrame({S.ITEM: item_ids, IIDX: np.arange(item_ids.len(), dtype=np.int32)}),
                        on=S.ITEM)
                  .sort(UIDX, S.TS, IIDX))
        if now is None:
            now = int(events[S.TS].max()) + 1
        return cls(events=events, user_ids=user_ids, item_ids=item_ids, now=int(now),
                   triggers=triggers or TriggerConfig(), items=data.items, users=data.users, seed=seed)

    @property
    def n_users(self) -> int:
        return self.user_ids.len()

    @property
    def n_items(self) -> int:
        return self.item_ids.len()

    def user_index(self, ids: pl.Series) -> np.ndarray:
        """Indices of the given user ids (-1 for unknown users)."""
        lookup = pl.DataFrame({S.USER: self.user_ids, UIDX: np.arange(self.n_users, dtype=np.int64)})
        frame = pl.DataFrame({S.USER: ids.cast(self.user_ids.dtype, strict=False)})
        return frame.join(lookup, on=S.USER, how="left", maintain_order="left")[UIDX].fill_null(-1).to_numpy()

    def user_rows(self, ids: pl.Series) -> np.ndarray:
        """The sorted, distinct indices of the given user ids that have a row (unknown users left out)."""
        rows = np.unique(self.user_index(ids))
        return rows[rows >= 0]

    def item_index(self, ids: pl.Series) -> np.ndarray:
        """Indices of the given item ids (-1 for unknown items)."""
        lookup = pl.DataFrame({S.ITEM: self.item_ids, IIDX: np.arange(self.n_items, dtype=np.int64)})
        frame = pl.DataFrame({S.ITEM: ids.cast(self.item_ids.dtype, strict=False)})
        return frame.join(lookup, on=S.ITEM, how="left", maintain_order="left")[IIDX].fill_null(-1).to_numpy()

    def engaged(self) -> pl.DataFrame:
        """Events that show engagement (click or deeper)."""
        return self.events.filter(pl.col(S.BEHAVIOR).is_in(ENGAGED))

    @property
    def interactions(self) -> sp.csr_matrix:
        """Binary users x items matrix of engagement: what a user has already seen and acted on."""
        return self.shared("interactions", self._interactions)

    def _interactions(self) -> sp.csr_matrix:
        pairs = self.engaged().select(UIDX, IIDX).unique()
        return sp.csr_matrix(
            (np.ones(pairs.height, dtype=np.float32), (pairs[UIDX].to_numpy(), pairs[IIDX].to_numpy())),
            shape=(self.n_users, self.n_items))

    @property
    def trigger_matrix(self) -> sp.csr_matrix:
        """Users x items trigger weights: behaviour weight x recency decay, strongest kept.

        A (user, item) pair's weight is its strongest single event, so repeated
        clicks do not swamp a purchase; each user keeps ``max_triggers`` items.
        A user with no behaviour inside ``window_days`` falls back to their latest
        ones: the window and the decay then count from their own last behaviour,
        so a returning user whose history is older than the window still gets
        candidates from the i2i channels.
        """
        return self.shared("trigger_matrix", self._trigger_matrix)

    def _trigger_matrix(self) -> sp.csr_matrix:
        cfg = self.triggers
        weights = pl.DataFrame({S.BEHAVIOR: list(cfg.behavior_weights),
                                "bw": list(cfg.behavior_weights.values())}).with_columns(
            pl.col(S.BEHAVIOR).cast(self.events.schema[S.BEHAVIOR]))
        last = pl.col(S.TS).max().over(UIDX)
        reference = pl.when(self.now - last <= cfg.window_days * 86400.0).then(pl.lit(self.now)).otherwise(last)
        age_days = (pl.col("reference") - pl.col(S.TS)) / 86400.0
        triggers = (self.events
                    .join(weights, on=S.BEHAVIOR)
                    .filter(pl.col("bw") > 0)
                    .with_columns(reference=reference)
                    .filter(age_days <= cfg.window_days)
                    .with_columns(w=pl.col("bw") * halving(age_days, cfg.half_life_days))
                    .group_by(UIDX, IIDX).agg(pl.col("w").max())
                    .sort([UIDX, "w", IIDX], descending=[False, True, False])
                    .filter(pl.int_range(pl.len()).over(UIDX) < cfg.max_triggers))
        return sp.csr_matrix(
            (triggers["w"].to_numpy(), (triggers[UIDX].to_numpy(), triggers[IIDX].to_numpy())),
            shape=(self.n_users, self.n_items))

    def item_column(self, column: str, default=None) -> np.ndarray | None:
        """An items-table column aligned to item indices (``default`` where unknown)."""
        if self.items is None or column not in self.items.columns:
            return None
        aligned = (pl.DataFrame({S.ITEM: self.item_ids})
                   .join(self.items.select(S.ITEM, column), on=S.ITEM, how="left", maintain_order="left"))
        series = aligned[column]
        if default is not None:
            series = series.fill_null(default)
        return series.to_numpy()


def item_popularity(train: TrainData, half_life_days: float | None = None) -> pl.DataFrame:
    """``item_idx, n``: distinct engaged users per item, each optionally decayed by recency, best first."""
    pairs = train.engaged().group_by(UIDX, IIDX).agg(pl.col(S.TS).max())
    if half_life_days is None:
        weight = pl.len().cast(pl.Float64)
    else:
        weight = halving(train.now - pl.col(S.TS), half_life_days * DAY).sum()
    return (pairs.group_by(IIDX).agg(weight.alias("n"))
            .sort(["n", IIDX], descending=[True, False]))
