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

import numpy as np
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
    names = sorted(candidates)
    if len(names) > 63:
        raise RecallError(f"{len(names)} channels in one merge; at most 63 are supported")
    # Slot positions rank / quota are few distinct numbers: code each as its place
    # among all of them, times 64, plus the channel number, so "best position, ties
    # to the first channel" is the minimum of one integer.
    ranks = {n: np.arange(int(candidates[n][S.RANK].max() or 0) + 1, dtype=np.float64) for n in names}
    if any(int(candidates[n][S.RANK].min() or 1) < 1 for n in names):
        raise RecallError("channel ranks must start at 1; pass channel outputs (user_id, item_id, score, rank)")
    positions = {name: slot_positions(ranks[name], quotas[name], name in strict or not backfill) for name in names}
    levels, _ = position_codes({name: p[1:] for name, p in positions.items()})
    frames = []
    for order, name in enumerate(names):
        code = np.searchsorted(levels, positions[name]).astype(np.int64) * 64 + order
        frame = candidates[name]
        frames.append(frame.select(S.USER, S.ITEM).with_columns(
            pl.Series("code", code[frame[S.RANK].to_numpy()], dtype=pl.Int64),
            pl.lit(1 << order, dtype=pl.Int64).alias("mask")))
    if not frames:
        return empty_merge()
    everything = pl.concat(frames, how="vertical_relaxed")
    dtypes = everything.schema
    # Integers, not strings, through the group-by: the source is a channel number and
    # the channels holding an item a bit mask, named once per distinct value at the end.
    # Non-negative integer ids are packed into one int64 key (a single-key group-by
    # is several times faster than a two-column one).
    width = _packing_width(everything)
    keys = [S.USER, S.ITEM] if width is None else ["pair"]
    if width is not None:
        everything = everything.select((pl.col(S.USER) * width + pl.col(S.ITEM)).alias("pair"), "code", "mask")
    infinite = int(np.searchsorted(levels, np.inf)) * 64
    best = (everything
            .group_by(keys)
            .agg(pl.col("code").min(), pl.col("mask").sum())  # each channel lists an item once per user
            .filter(pl.col("code") < infinite))
    codes = infinite + 64
    if width is not None and (int(best["pair"].max() or 0) // width + 1) * codes * width < 2**63:
        # One packed key (user, code, item) sorts several times faster than three columns.
        user, item = pl.col("pair") // width, pl.col("pair") % width
        best = (best.sort(user * (codes * width) + pl.col("code") * width + item)
                .select(user.cast(dtypes[S.USER]).alias(S.USER), item.cast(dtypes[S.ITEM]).alias(S.ITEM),
                        "code", "mask"))
    else:
        if width is not None:
            best = best.select((pl.col("pair") // width).cast(dtypes[S.USER]).alias(S.USER),
                               (pl.col("pair") % width).cast(dtypes[S.ITEM]).alias(S.ITEM), "code", "mask")
        best = best.sort(S.USER, "code", S.ITEM)
    # Rank within each user's run of rows (sorted by user): position minus the run's start.
    run = best[S.USER].rle_id().to_numpy()
    starts = np.flatnonzero(np.r_[True, run[1:] != run[:-1]]) if run.size else np.zeros(0, np.int64)
    rank = np.arange(run.size) - np.repeat(starts, np.diff(np.r_[starts, run.size])) + 1
    best = best.with_columns(pl.Series(S.RANK, rank, dtype=pl.Int32)).filter(pl.col(S.RANK) <= budget)
    code = best["code"].to_numpy()
    best = best.with_columns(pl.Series("position", levels[code // 64]), pl.Series("order", code % 64))
    masks = best["mask"].unique().sort()
    lookup = pl.DataFrame({
        "mask": masks,
        S.CHANNELS: pl.Series([[n for bit, n in enumerate(names) if m >> bit & 1] for m in masks.to_list()],
                              dtype=pl.List(pl.String)),
    })
    return (best
            .join(lookup, on="mask", how="left", maintain_order="left")
            .select(S.USER, S.ITEM, (1.0 / pl.col("position")).alias(S.SCORE), S.RANK,
                    pl.col("order").cast(pl.Int64).replace_strict(list(range(len(names))), names,
                                                                  return_dtype=pl.String).alias(SOURCE),
                    S.CHANNELS))


def slot_positions(ranks: np.ndarray, quota: int, capped: bool) -> np.ndarray:
    """The merge rule: a candidate's slot position is ``rank / quota`` in its channel.

    A zero quota gives no position (``inf``); a ``capped`` channel (strict, or any
    channel without back-fill) has none past its quota. True division, so equal
    fractions (3/5, 9/15) are equal doubles and tie. The local merge, the Spark merge
    and the tuner's fast merge all call this.
    """
    ranks = np.asarray(ranks, dtype=np.float64)
    if quota <= 0:
        return np.full(ranks.shape, np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        position = ranks / quota
    if capped:
        position = np.where(ranks > quota, np.inf, position)
    return position


def position_codes(positions: Mapping[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The distinct positions (``inf`` last) and, per channel in name order, ``place x 64 + channel number``.

    Ordering by that one integer is ordering by (position, channel order): "best
    position, ties to the first channel by name" is a minimum. At most 63 channels.
    """
    names = sorted(positions)
    levels = np.unique(np.concatenate([np.asarray(positions[n], dtype=np.float64) for n in names]
                                      + [np.array([np.inf])]))
    return levels, {n: np.searchsorted(levels, positions[n]).astype(np.int64) * 64 + order
                    for order, n in enumerate(names)}


def _packing_width(frame: pl.DataFrame) -> int | None:
    """``w`` such that ``user * w + item`` is a unique int64 for every row, or None if there is none."""
    if not (frame.schema[S.USER].is_integer() and frame.schema[S.ITEM].is_integer()) or frame.height == 0:
        return None
    bounds = frame.select(pl.col(S.USER).min().alias("u0"), pl.col(S.USER).max().alias("u1"),
                          pl.col(S.ITEM).min().alias("i0"), pl.col(S.ITEM).max().alias("i1")).row(0)
    u0, u1, i0, i1 = (int(v) for v in bounds)
    width = i1 + 1
    if u0 < 0 or i0 < 0 or (u1 + 1) * width >= 2**63:
        return None
    return width


def empty_merge() -> pl.DataFrame:
    return pl.DataFrame(schema={S.USER: pl.Int64, S.ITEM: pl.Int64, S.SCORE: pl.Float64,
                                S.RANK: pl.Int32, SOURCE: pl.String, S.CHANNELS: pl.List(pl.String)})
