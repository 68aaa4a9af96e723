"""itemCF on Spark: the formula of :mod:`recall.channels.itemcf` as joins and aggregations.

For items i, j over users u who engaged with both (latest engagement per (u, i),
crawlers with more than ``max_user_items`` items left out):

    C(i, j)   = sum_u  w(u) * f(|b_ui - b_uj|)      for |b_ui - b_uj| <= W
    sim(i, j) = C(i, j) / (N_i^alpha * N_j^(1 - alpha))

The pairs come from a self-join of the (user, item, bucket) rows on the user,
filtered by the bucket gap; ``f`` is looked up from the same Python floats the
local engine uses; each user's term carries the hot-item normalisation as in the
local kernel and the terms are added in user order (:func:`recall.spark.ops.ordered_sum`).
Without a pair window every bucket is 0, so every pair counts with ``f = 1`` (as locally).
The work is the sum over users of n_u^2, the same pairs the local kernel sums.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from recall import schema as S
from recall.channels.itemcf import ItemCFParams, max_bucket_gap, pair_decay, popularity_scales
from recall.decay import log_damping
from recall.errors import RecallError
from recall.spark.data import SparkData
from recall.spark.ops import (distinct_values, long_table, lookup, normalise_max, numpy_lookup, ordered_sum,
                              rerank, top_k)

# Above this many buckets in the window, f is computed by Spark instead of looked up.
MAX_LOOKUP = 10_000


def engagement_rows(data: SparkData, p: ItemCFParams) -> DataFrame:
    """``user_id, item_id, ts, n_u``: latest engagement per (user, item), old events and crawlers out."""
    events = data.events.filter(F.col(S.BEHAVIOR).isin(list(p.behaviors)))
    if p.window_days is not None:
        events = events.filter(F.col(S.TS) >= F.lit(data.now - p.window_days * 86400))
    pairs = events.groupBy(S.USER, S.ITEM).agg(F.max(S.TS).alias(S.TS))
    return (pairs.withColumn("n_u", F.count(F.lit(1)).over(Window.partitionBy(S.USER)))
            .filter(F.col("n_u") <= p.max_user_items))


def category_side(data: SparkData, name: str, p: ItemCFParams) -> DataFrame | None:
    if not p.same_category:
        return None
    side = data.item_side(S.CATEGORY)
    if side is None:
        raise RecallError(f"channels.{name}.same_category needs an items table with a "
                          "'category_id' column; add one or set same_category = false")
    return side


def cooccurrence(data: SparkData, p: ItemCFParams, categories: DataFrame | None = None) -> DataFrame:
    """``item_id, neighbor_id, score``: sim(i, j) for every co-engaged pair i != j, untruncated.

    With ``categories`` (``item_id, category_id``), only pairs within one known category.
    Each user's term is ``(w(u) N_i^-alpha) * (f N_j^-(1-alpha))`` and the terms are
    added in user order: the local kernel's factors and order, so the scores agree
    to the last bit (``log1p`` and ``**`` come from numpy, see :func:`numpy_lookup`).
    """
    rows = engagement_rows(data, p)
    max_gap = max_bucket_gap(p)
    if p.pair_window_hours is None:
        bucket = F.lit(0).cast("long")
    else:
        bucket_seconds = p.bucket_hours * 3600
        t0 = rows.agg(F.min(S.TS).alias("_t0"))
        rows = rows.crossJoin(F.broadcast(t0))
        bucket = F.floor((F.col(S.TS) - F.col("_t0")) / F.lit(float(bucket_seconds))).cast("long")
    rows = rows.select(S.USER, S.ITEM, bucket.alias("_b"), F.col("n_u").cast("double").alias("_nu"))
    if p.iuf:
        iuf = numpy_lookup(data.spark, distinct_values(rows, "_nu"), log_damping, "_w")
        rows = rows.join(iuf, rows["_nu"] == iuf["_key"]).drop("_key")
    else:
        rows = rows.withColumn("_w", F.lit(1.0))
    counts = rows.groupBy(S.ITEM).agg(F.count(F.lit(1)).cast("double").alias("_n"))
    popularity = distinct_values(counts, "_n")
    scales = numpy_lookup(data.spark, popularity, lambda n: popularity_scales(n, p.alpha)[0], "_si").join(
        numpy_lookup(data.spark, popularity, lambda n: popularity_scales(n, p.alpha)[1], "_sj"), "_key")
    counts = counts.join(F.broadcast(scales), counts["_n"] == scales["_key"]).select(S.ITEM, "_si", "_sj")

    left = (rows.join(counts.select(S.ITEM, "_si"), S.ITEM)
            .select(S.USER, S.ITEM, F.col("_b").alias("_bi"), (F.col("_w") * F.col("_si")).alias("_wi")))
    right = (rows.join(counts.select(S.ITEM, "_sj"), S.ITEM)
             .select(S.USER, F.col(S.ITEM).alias(S.NEIGHBOR), F.col("_b").alias("_bj"), "_sj"))
    gap = F.abs(F.col("_bi") - F.col("_bj"))
    pairs = left.join(right, S.USER).filter((F.col(S.ITEM) != F.col(S.NEIGHBOR)) & (gap <= max_gap))

    if max_gap == 0 or p.decay_half_life_hours is None:
        f = F.lit(1.0)
    elif max_gap <= MAX_LOOKUP:
        f = lookup([pair_decay(g, p) for g in range(max_gap + 1)], gap)
    else:
        f = pair_decay(gap.cast("double"), p)
    terms = pairs.select(S.USER, S.ITEM, S.NEIGHBOR, (F.col("_wi") * (f * F.col("_sj"))).alias("_term"))
    if categories is not None:
        cat_i = categories.select(S.ITEM, F.col(S.CATEGORY).alias("_ci"))
        cat_j = categories.select(F.col(S.ITEM).alias(S.NEIGHBOR), F.col(S.CATEGORY).alias("_cj"))
        terms = (terms.join(F.broadcast(cat_i), S.ITEM).join(F.broadcast(cat_j), S.NEIGHBOR)
                 .filter(F.col("_ci") == F.col("_cj")).drop("_ci", "_cj"))
    return terms.groupBy(S.ITEM, S.NEIGHBOR).agg(ordered_sum("_term", S.USER).alias(S.SCORE))


def finish_table(scores: DataFrame, top: int, normalize: bool) -> DataFrame:
    """Truncate each row to ``top`` neighbours, optionally divide by its maximum, rank."""
    table = top_k(scores, S.ITEM, S.NEIGHBOR, top)
    if normalize:
        table = rerank(normalise_max(table, S.ITEM), S.ITEM, S.NEIGHBOR)
    return long_table(table, S.ITEM, S.NEIGHBOR)


def itemcf_table(data: SparkData, p: ItemCFParams, name: str = "itemcf") -> DataFrame:
    """The itemCF i2i table ``item_id, neighbor_id, score, rank``."""
    return finish_table(cooccurrence(data, p, category_side(data, name, p)), p.top_k, p.normalize)


__all__ = ["cooccurrence", "engagement_rows", "finish_table", "itemcf_table"]
