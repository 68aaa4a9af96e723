"""The quota merge of :mod:`recall.merge` on Spark.

Each candidate's slot position is ``rank / quota`` in its channel (infinite past
the quota for a ``strict`` channel, or for all without back-fill); per (user,
item) the smallest (position, channel order) wins; per user the ``budget``
smallest positions are kept (ties: channel order, then the smaller item);
``channels`` lists every channel that found the item at a position no later than
the user's last kept one; ``score = 1 / position``. Channels travel through the
shuffle as numbers (position codes) and get their names at the end.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from recall import schema as S
from recall.errors import RecallError
from recall.merge import SOURCE, position_codes, slot_positions

def merge_channels(candidates: Mapping[str, DataFrame], quotas: Mapping[str, int], budget: int, *,
                   strict: frozenset[str] | set[str] = frozenset(), backfill: bool = True) -> DataFrame:
    """Merge per-channel ``user_id, item_id, score, rank`` frames into ``user_id, item_id, score, rank,
    source, channels`` with at most ``budget`` rows per user (see :func:`recall.merge.merge_channels`).

    One pass over every row: the local merge's first pass over each channel's first rows
    is exact (it gives the same table), and here the hash aggregation spreads over the
    cluster while a second pass would double the query plan.
    """
    missing = sorted(set(candidates) - set(quotas))
    if missing:
        raise RecallError(f"no quota for channel(s) {missing}; set channels.<name>.quota or share")
    if not candidates:
        raise RecallError("nothing to merge: no channel produced candidates")
    names = sorted(candidates)
    if len(names) > 63:
        raise RecallError(f"{len(names)} channels in one merge; at most 63 are supported")
    capped = {name for name in names if name in strict or not backfill}
    # The slot positions rank / quota are few distinct numbers, known once the largest rank
    # is: as in the local merge, each (position, channel) is coded as the position's place
    # among all of them times 64 plus the channel number, so "best position, ties to the
    # first channel" is the minimum of one integer (a hash aggregation, not a sort).
    # True (correctly rounded) division, as numpy's: equal fractions (9/60, 3/20) are one
    # level, so slot ties across channels go to the channel order in both engines.
    top = _largest_ranks(candidates)
    levels, all_codes = position_codes({
        name: slot_positions(np.arange(1, top[name] + 1), quotas[name], name in capped) for name in names})
    infinite = int(np.searchsorted(levels, np.inf)) * 64
    frames = []
    for name in names:
        codes = all_codes[name]
        code = F.element_at(F.array(*[F.lit(int(c)) for c in codes]), F.col(S.RANK).cast("int")) if codes.size \
            else F.lit(infinite)
        # Numbers, not names, through the shuffle: the (position, channel) code.
        frames.append(candidates[name].select(S.USER, S.ITEM, code.cast("long").alias("_code")))
    everything = frames[0]
    for frame in frames[1:]:
        everything = everything.unionByName(frame)
    best = (everything
            .groupBy(S.USER, S.ITEM)
            .agg(F.min("_code").alias("_code"), F.collect_list("_code").alias("_codes"))
            .filter(F.col("_code") < F.lit(infinite)))
    slot = Window.partitionBy(S.USER).orderBy("_code", S.ITEM)
    order = F.col("_code") % 64
    position = F.element_at(F.array(*[F.lit(float(v)) for v in levels]), (F.col("_code") / 64).cast("int") + 1)
    source = F.element_at(F.array(*[F.lit(n) for n in names]), order.cast("int") + 1)
    # channels: those listing the item at a position no later than the user's last kept one,
    # in name order (= channel number order).
    reached = F.array_sort(F.transform(F.filter("_codes", lambda c: F.shiftright(c, 6) <= F.col("_last")),
                                       lambda c: (c % 64).cast("int")))
    listed = F.transform(reached, lambda i: F.element_at(F.array(*[F.lit(n) for n in names]), i + 1))
    return (best.withColumn(S.RANK, F.row_number().over(slot))
            .filter(F.col(S.RANK) <= budget)
            .withColumn("_last", F.max(F.shiftright("_code", 6)).over(Window.partitionBy(S.USER)))
            .select(S.USER, S.ITEM, (F.lit(1.0) / position).alias(S.SCORE),
                    F.col(S.RANK).cast("int").alias(S.RANK), source.alias(SOURCE), listed.alias(S.CHANNELS)))


def _largest_ranks(candidates: Mapping[str, DataFrame]) -> dict[str, int]:
    """Each channel's largest rank (one job over all the tables); a rank below 1 is refused."""
    names = sorted(candidates)
    union = None
    for order, name in enumerate(names):
        frame = candidates[name].select(F.lit(order).alias("_c"), F.col(S.RANK).cast("long").alias("_r"))
        union = frame if union is None else union.unionByName(frame)
    rows = union.groupBy("_c").agg(F.min("_r").alias("lo"), F.max("_r").alias("hi")).collect()
    if any(row["lo"] < 1 for row in rows):
        raise RecallError("channel ranks must start at 1; pass channel outputs (user_id, item_id, score, rank)")
    found = {names[row["_c"]]: int(row["hi"]) for row in rows}
    return {name: found.get(name, 0) for name in names}


__all__ = ["merge_channels"]
