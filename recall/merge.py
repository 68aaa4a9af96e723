"""Blend channels under per-channel quotas: dedupe, record who found each item, back-fill.

Each candidate gets a *slot position* ``rank / quota`` in its channel: a channel's
first ``quota`` items have positions in (0, 1], the items after them positions above 1.
Per user the merge keeps the ``budget`` items with the smallest position
(an item found by several channels keeps its best one). So:

- when every channel has enough unique candidates, channel c fills exactly its
  ``quota`` slots, interleaved in proportion to the quotas;
- an item two channels share takes one slot, and a channel that comes up short
  leaves slots that the next-best items of the other channels fill (back-fill);
- a ``strict`` channel never goes beyond its quota, and without back-fill no
  channel does.

``channels`` lists every channel whose list holds the item (rankers read it as
``match_type``); ``source`` is the channel whose slot it took. ``score`` is
``1 / position``, so the order across channels follows the quotas.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from recall import schema as S
from recall.errors import RecallError

SOURCE = "source"


def merge_channels(candidates: Mapping[str, pl.DataFrame], quotas: Mapping[str, int], budget: int, *,
                   strict: frozenset[str] | set[str] = frozenset(), backfill: bool = True) -> pl.DataFrame:
    """Merge per-channel candidate tables (``user_id, item_id, score, rank``) into one list per user.

    Returns ``user_id, item_id, score, rank, source, channels`` with at most
    ``budget`` rows per user and no duplicate (user, item) pairs.
    """
    missing = sorted(set(candidates) - set(quotas))
    if missing:
        raise RecallError(f"no quota for channel(s) {missing}; set channels.<name>.quota or share")
    order = {name: position for position, name in enumerate(sorted(candidates))}
    frames = []
    for name, frame in candidates.items():
        quota = quotas[name]
        capped = name in strict or not backfill
        position = pl.col(S.RANK).cast(pl.Float64) / quota if quota > 0 else pl.lit(float("inf"))
        if capped and quota > 0:
            position = pl.when(pl.col(S.RANK) <= quota).then(position).otherwise(float("inf"))
        frames.append(frame.select(
            S.USER, S.ITEM, position.alias("position"),
            pl.lit(name).alias(SOURCE), pl.lit(order[name], dtype=pl.Int32).alias("order")))
    if not frames:
        return empty_merge()
    everything = pl.concat(frames, how="vertical_relaxed")
    best = (everything
            .sort(S.USER, S.ITEM, "position", "order")
            .group_by(S.USER, S.ITEM, maintain_order=True)
            .agg(pl.col("position").first(), pl.col(SOURCE).first(), pl.col("order").first(),
                 pl.col(SOURCE).unique().sort().alias(S.CHANNELS))
            .filter(pl.col("position").is_finite())
            .sort(S.USER, "position", "order", S.ITEM)
            .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int32).over(S.USER).alias(S.RANK))
            .filter(pl.col(S.RANK) <= budget))
    return best.select(S.USER, S.ITEM, (1.0 / pl.col("position")).alias(S.SCORE), S.RANK, SOURCE,
                       S.CHANNELS)


def empty_merge() -> pl.DataFrame:
    return pl.DataFrame(schema={S.USER: pl.Int64, S.ITEM: pl.Int64, S.SCORE: pl.Float64,
                                S.RANK: pl.Int32, SOURCE: pl.String, S.CHANNELS: pl.List(pl.String)})
