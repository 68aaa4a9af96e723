"""The quota merge of :mod:`recall.merge` on Spark.

Each candidate's slot position is ``rank / quota`` in its channel (infinite past
the quota for a ``strict`` channel, or for all without back-fill); per (user,
item) the smallest (position, channel order) wins and ``channels`` lists every
channel that found it; per user the ``budget`` smallest positions are kept
(ties: channel order, then the smaller item); ``score = 1 / position``.
"""

from __future__ import annotations

from collections.abc import Mapping

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from recall import schema as S
from recall.errors import RecallError
from recall.merge import SOURCE

INF = float("inf")


def merge_channels(candidates: Mapping[str, DataFrame], quotas: Mapping[str, int], budget: int, *,
                   strict: frozenset[str] | set[str] = frozenset(), backfill: bool = True) -> DataFrame:
    """Merge per-channel ``user_id, item_id, score, rank`` frames into ``user_id, item_id, score, rank,
    source, channels`` with at most ``budget`` rows per user (see :func:`recall.merge.merge_channels`)."""
    missing = sorted(set(candidates) - set(quotas))
    if missing:
        raise RecallError(f"no quota for channel(s) {missing}; set channels.<name>.quota or share")
    if not candidates:
        raise RecallError("nothing to merge: no channel produced candidates")
    order = {name: position for position, name in enumerate(sorted(candidates))}
    frames = []
    for name, frame in candidates.items():
        quota = quotas[name]
        capped = name in strict or not backfill
        rank = F.col(S.RANK).cast("double")
        # rank * (1 / quota), not rank / quota: polars divides a column by a scalar that way, and
        # slot ties across channels (9/60 vs 3/20) must resolve as in the local merge.
        position = rank * F.lit(1.0 / quota) if quota > 0 else F.lit(INF)
        if capped and quota > 0:
            position = F.when(F.col(S.RANK) <= quota, position).otherwise(F.lit(INF))
        frames.append(frame.select(S.USER, S.ITEM, position.alias("_position"),
                                   F.lit(name).alias(SOURCE), F.lit(order[name]).cast("int").alias("_order")))
    everything = frames[0]
    for frame in frames[1:]:
        everything = everything.unionByName(frame)
    best = (everything
            .groupBy(S.USER, S.ITEM)
            .agg(F.min(F.struct("_position", "_order", SOURCE)).alias("_best"),
                 F.array_sort(F.collect_set(SOURCE)).alias(S.CHANNELS))
            .select(S.USER, S.ITEM, "_best._position", "_best._order", F.col(f"_best.{SOURCE}").alias(SOURCE),
                    S.CHANNELS)
            .filter(F.col("_position") < F.lit(INF)))
    slot = Window.partitionBy(S.USER).orderBy("_position", "_order", S.ITEM)
    return (best.withColumn(S.RANK, F.row_number().over(slot))
            .filter(F.col(S.RANK) <= budget)
            .select(S.USER, S.ITEM, (F.lit(1.0) / F.col("_position")).alias(S.SCORE),
                    F.col(S.RANK).cast("int").alias(S.RANK), SOURCE, S.CHANNELS))


__all__ = ["merge_channels"]
