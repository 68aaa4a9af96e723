"""User-based CF on Spark: the IIF-cosine neighbours and votes of :mod:`recall.channels.usercf`.

    sim(u, v)   = sum_{i in N(u) & N(v)} w_i / sqrt(|N(u)| |N(v)|),   w_i = 1 / log(1 + N_i)
    score(u, i) = sum_{v in S(u)} sim(u, v) * r(v, i)

The user pairs come from a self-join of the (user, item) rows on the item (the
same products the local engine forms block-wise: sum_i N_i^2), summed per pair;
each user keeps ``top_k_users`` neighbours (ties to the smaller user id); the
votes are a join of the neighbour table with the strengths ``r(v, i)`` on ``v``.
"""

from __future__ import annotations


from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from recall import schema as S
from recall.channels.usercf import UserCFParams, cosine
from recall.decay import DAY, halving, log_damping
from recall.spark.data import SparkData
from recall.spark.ops import distinct_values, long_table, numpy_lookup, ordered_sum, top_k


def engagement_pairs(data: SparkData, p: UserCFParams) -> DataFrame:
    """``user_id, item_id, r, n_u``: strongest recency-weighted event per pair; crawlers out."""
    events = data.events.filter(F.col(S.BEHAVIOR).isin(list(p.behaviors)))
    if p.window_days is not None:
        events = events.filter(F.col(S.TS) >= F.lit(data.now - p.window_days * 86400))
    half_life = p.recency_half_life_days
    if half_life is None:
        half_life = data.triggers.half_life_days
    decay = halving(F.lit(data.now) - F.col(S.TS), float(half_life) * DAY)
    weights = data.behavior_weights(data.triggers.behavior_weights)
    pairs = (events.join(weights, S.BEHAVIOR, "left")
             .withColumn("r", F.coalesce(F.col("bw"), F.lit(0.0)) * decay)
             .groupBy(S.USER, S.ITEM).agg(F.max("r").alias("r")))
    return (pairs.withColumn("n_u", F.count(F.lit(1)).over(Window.partitionBy(S.USER)))
            .filter(F.col("n_u") <= p.max_user_items))


def neighbour_table(data: SparkData, pairs: DataFrame, p: UserCFParams) -> DataFrame:
    """``user_id, neighbor_id, score, rank``: each user's top-K most similar users.

    The overlap adds the shared items' weights in item order (the local product's
    order), with the weights computed by numpy, so the scores agree to the last bit.
    """
    counts = pairs.groupBy(S.ITEM).agg(F.count(F.lit(1)).cast("double").alias("_n"))
    if p.iif:
        weights = numpy_lookup(data.spark, distinct_values(counts, "_n"), log_damping, "_wi")
        counts = counts.join(weights, counts["_n"] == weights["_key"])
    else:
        counts = counts.withColumn("_wi", F.lit(1.0))
    rows = pairs.join(counts.select(S.ITEM, "_wi"), S.ITEM)
    left = rows.select(S.ITEM, S.USER, F.col("n_u").cast("double").alias("_nu"), "_wi")
    right = rows.select(S.ITEM, F.col(S.USER).alias(S.NEIGHBOR), F.col("n_u").cast("double").alias("_nv"))
    shared = (left.join(right, S.ITEM).filter(F.col(S.USER) != F.col(S.NEIGHBOR))
              .groupBy(S.USER, S.NEIGHBOR)
              .agg(ordered_sum("_wi", S.ITEM).alias("_overlap"), F.count(F.lit(1)).alias("_common"),
                   F.first("_nu").alias("_nu"), F.first("_nv").alias("_nv")))
    if p.min_common_items > 1:
        shared = shared.filter(F.col("_common") >= p.min_common_items)
    sims = shared.select(S.USER, S.NEIGHBOR,
                         cosine(F.col("_overlap"), F.col("_nu"), F.col("_nv"), sqrt=F.sqrt).alias(S.SCORE))
    return long_table(top_k(sims, S.USER, S.NEIGHBOR, p.top_k_users), S.USER, S.NEIGHBOR)


def usercf_candidates(data: SparkData, pairs: DataFrame, neighbours: DataFrame, n: int) -> DataFrame:
    """``user_id, item_id, score, rank``: neighbours' votes, engaged items out, top ``n`` per user."""
    strength = pairs.filter(F.col("r") > 0).select(F.col(S.USER).alias(S.NEIGHBOR), S.ITEM, "r")
    votes = (neighbours.select(S.USER, S.NEIGHBOR, F.col(S.SCORE).alias("_sim"))
             .join(strength, S.NEIGHBOR)
             .select(S.USER, S.NEIGHBOR, S.ITEM, (F.col("_sim") * F.col("r")).alias("_t"))
             .groupBy(S.USER, S.ITEM).agg(ordered_sum("_t", S.NEIGHBOR).alias(S.SCORE))
             .join(data.engaged_pairs(), [S.USER, S.ITEM], "left_anti"))
    return long_table(top_k(votes, S.USER, S.ITEM, n), S.USER, S.ITEM)


__all__ = ["engagement_pairs", "neighbour_table", "usercf_candidates"]
