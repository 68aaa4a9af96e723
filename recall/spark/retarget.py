"""Retargeting on Spark: :mod:`recall.channels.retarget` as one aggregation and a window.

``score(u, i) = AGG_e w(b_e) * 0.5 ** ((now - t_e) / half_life)`` over u's recent
click / fav / cart events on i; the pair is dropped when u bought i at or after
its last such event; each user keeps ``min(n, max_per_user)`` pairs, ties to the
smaller item.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recall import schema as S
from recall.channels.retarget import RetargetParams
from recall.decay import DAY, halving
from recall.spark.data import SparkData
from recall.spark.ops import long_table, ordered_sum, top_k


def retarget_candidates(data: SparkData, p: RetargetParams, n: int) -> DataFrame:
    """``user_id, item_id, score, rank``: open retargeting pairs, at most ``min(n, max_per_user)`` per user."""
    events = data.events.filter(F.col(S.TS) <= F.lit(data.now))
    looks = events.join(data.behavior_weights(p.behavior_weights), S.BEHAVIOR).filter(F.col("bw") > 0)
    if p.window_days is not None:
        looks = looks.filter(F.col(S.TS) >= F.lit(data.now - p.window_days * DAY))
    decay = halving(F.lit(data.now) - F.col(S.TS), None if p.half_life_days is None else p.half_life_days * DAY)
    value = (F.col("bw") * decay).alias("_v")
    pairs = (looks.select(S.USER, S.ITEM, S.TS, S.BEHAVIOR, value)
             .groupBy(S.USER, S.ITEM)
             .agg((ordered_sum("_v", S.TS, S.BEHAVIOR) if p.aggregate == "sum" else F.max("_v")).alias(S.SCORE),
                  F.max(S.TS).alias("_last_look")))
    last_buy = (events.filter(F.col(S.BEHAVIOR) == "buy")
                .groupBy(S.USER, S.ITEM).agg(F.max(S.TS).alias("_last_buy")))
    # A buy in the same second as the last look is that look converting: it counts as "after".
    open_pairs = (pairs.join(last_buy, [S.USER, S.ITEM], "left")
                  .filter(F.col("_last_buy").isNull() | (F.col("_last_buy") < F.col("_last_look"))))
    return long_table(top_k(open_pairs, S.USER, S.ITEM, min(n, p.max_per_user)), S.USER, S.ITEM)


__all__ = ["retarget_candidates"]
