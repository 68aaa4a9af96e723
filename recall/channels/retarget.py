"""Retargeting: re-recommend items the user clicked, favourited or carted but did not buy.

For a user u and an item i, over u's events e on i of a retargeting behaviour
(``behavior_weights``: click, fav, cart) inside the last ``window_days`` before ``now``:

    score(u, i) = AGG_e  w(b_e) * 0.5 ** ((now - t_e) / half_life)

with ``AGG`` = sum (default: every renewed look at the item adds intent) or max
(the single strongest, most recent signal, like the i2i triggers). The pair is
dropped when u bought i at or after the last such event, ``t_buy >= max_e t_e``
(the intent converted); a purchase before it does not drop it (the user came back
to the item, e.g. to buy again). Events after ``now`` are ignored.

Each user keeps the ``min(n, max_per_user)`` best pairs (ties: smaller item index),
so the channel's own volume never exceeds ``max_per_user``: the source stresses
that retargeting must be strictly controlled. The channel deliberately does *not*
exclude items the user interacted with; those are its whole output. Its ``quota``
defaults to ``max_per_user`` and ``strict`` to true, so the merge does not back-fill
it beyond that either.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import polars as pl
from pydantic import Field, field_validator, model_validator

from recall import schema as S
from recall.interface import Channel, ChannelParams, Span, empty_candidates
from recall.context import IIDX, UIDX, TrainData
from recall.decay import DAY, halving

RETARGET_BEHAVIORS = ("click", "fav", "cart")


class RetargetParams(ChannelParams):
    strict: bool = Field(True, description="never take back-filled slots beyond the quota (retargeting volume "
                                           "must be strictly controlled)")
    behavior_weights: dict[str, float] = Field(
        default_factory=lambda: {"click": 1.0, "fav": 2.0, "cart": 3.0},
        description="strength of each retargeting behaviour (click, fav, cart); 0 leaves it out")
    window_days: Span = Field(14.0, gt=0, description="only behaviours this recent (inf: all)")
    half_life_days: Span = Field(3.0, gt=0, description="recency half-life of a behaviour (inf: no decay)")
    aggregate: Literal["sum", "max"] = Field("sum", description="combine a user's events on one item: "
                                                                "sum (repeated interest adds up) or max")
    max_per_user: int = Field(10, ge=1, description="hard cap on the channel's candidates per user")

    @model_validator(mode="before")
    @classmethod
    def _default_quota(cls, values):
        # Neither quota nor share: the channel's slots are its own cap, not a share of the budget.
        if isinstance(values, dict) and values.get("quota") is None and values.get("share") is None:
            values = {**values, "quota": values.get("max_per_user", cls.model_fields["max_per_user"].default)}
        return values

    @field_validator("behavior_weights")
    @classmethod
    def _known(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(RETARGET_BEHAVIORS))
        if unknown:
            raise ValueError(f"unknown retargeting behaviour(s) {unknown}; allowed: "
                             f"{', '.join(RETARGET_BEHAVIORS)} (a buy ends retargeting, it never starts it)")
        if any(w < 0 for w in value.values()):
            raise ValueError("behaviour weights must be >= 0")
        if not any(w > 0 for w in value.values()):
            raise ValueError("give at least one behaviour a positive weight")
        return value


def retarget_scores(data: TrainData, p: RetargetParams) -> pl.DataFrame:
    """Every retargeting pair with its score and rank: ``user_idx, item_idx, user_id, item_id, score, rank``."""
    events = data.events.filter(pl.col(S.TS) <= data.now)
    weights = pl.DataFrame({S.BEHAVIOR: list(p.behavior_weights), "bw": list(p.behavior_weights.values())},
                           schema={S.BEHAVIOR: pl.String, "bw": pl.Float64}).with_columns(
        pl.col(S.BEHAVIOR).cast(events.schema[S.BEHAVIOR]))
    looks = events.join(weights, on=S.BEHAVIOR).filter(pl.col("bw") > 0)
    if p.window_days is not None:
        looks = looks.filter(pl.col(S.TS) >= data.now - p.window_days * DAY)
    decay = halving(data.now - pl.col(S.TS), None if p.half_life_days is None else p.half_life_days * DAY)
    value = pl.col("bw") * decay
    pairs = (looks
             .group_by(UIDX, IIDX)
             .agg(pl.col(S.USER).first(), pl.col(S.ITEM).first(),
                  (value.sum() if p.aggregate == "sum" else value.max()).alias(S.SCORE),
                  pl.col(S.TS).max().alias("last_look")))
    last_buy = (events.filter(pl.col(S.BEHAVIOR) == "buy")
                .group_by(UIDX, IIDX).agg(pl.col(S.TS).max().alias("last_buy")))
    # A buy in the same second as the last look is that look converting: it counts as "after".
    open_pairs = (pairs.join(last_buy, on=[UIDX, IIDX], how="left")
                  .filter(pl.col("last_buy").is_null() | (pl.col("last_buy") < pl.col("last_look"))))
    return (open_pairs
            .sort([UIDX, S.SCORE, IIDX], descending=[False, True, False])
            .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int32).over(UIDX).alias(S.RANK))
            .filter(pl.col(S.RANK) <= p.max_per_user)
            .select(UIDX, IIDX, S.USER, S.ITEM, S.SCORE, S.RANK))


class Retarget(Channel):
    name = "retarget"
    description = "retargeting: clicked, favourited or carted items not bought since, under a strict per-user cap"
    Params = RetargetParams

    def fit(self, data: TrainData) -> "Retarget":
        self.scores_ = retarget_scores(data, self.params)
        return self

    def recommend(self, data: TrainData, n: int, users: np.ndarray | None = None) -> pl.DataFrame:
        k = min(n, self.params.max_per_user)
        recs = self.scores_.filter(pl.col(S.RANK) <= k).select(S.USER, S.ITEM, S.SCORE, S.RANK)
        if users is not None:
            recs = recs.filter(pl.col(S.USER).is_in(data.user_ids.gather(users).implode()))
        return recs if recs.height else empty_candidates(data)
