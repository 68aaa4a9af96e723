"""Swing on Spark: the user-pair item similarity of :mod:`recall.channels.swing` as joins.

For items i and j, summed over pairs of distinct users u < v who both engaged with
i (in the sampled engagement) and j:

    sim(i, j) = sum_{u < v}  c_uv,     c_uv = w_u * w_v / (alpha + |I_u & I_v|)

- engagement, user range and per-item cap as locally: distinct (user, item) of the
  ``behaviors`` inside ``window_days``, users with ``min_user_items..max_user_items``
  items; an item with more than ``max_users_per_item`` users keeps a seeded uniform
  sample of them on the trigger side only;
- the common items of each pair come from a self-join of the engagement on the item
  (``u < v``), the overlap ``|I_u & I_v|`` is their count (pairs sharing fewer than
  two items are dropped: they only reach the diagonal); the sampled common items
  come from the same self-join of the sampled engagement;
- ``w_u`` and ``c_uv`` are :func:`recall.channels.swing.user_weight` (by numpy on the
  driver, per distinct ``|I_u|``) and :func:`recall.channels.swing.pair_weight` (a
  column expression built by the same function);
- ``sim`` joins each pair's sampled items (i) with its common items (j != i) and
  sums ``c_uv`` in user-pair order; the table is finished like itemCF's (top K,
  optional row maximum normalisation, ranks).

**The sample.** Locally the per-item sample draws numpy keys; here each (user, item)
gets the key ``xxhash64(seed, user, item)``. Both keep the ``max_users_per_item``
users with the smallest keys, so both are seeded uniform samples and the cap is the
same, but they are different draws: the engines agree exactly on items at or below
the cap (every item of the bundled sample), and in distribution above it.

Work: the sum over items of (users per item)^2 for the pairs, as the local kernel;
never a users x users matrix.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from recall import schema as S
from recall.channels.swing import SwingParams, pair_weight, user_weight
from recall.spark.data import SparkData
from recall.spark.itemcf import finish_table
from recall.spark.ops import distinct_values, numpy_lookup, ordered_sum

OTHER = "_v"


def engagement(data: SparkData, p: SwingParams) -> DataFrame:
    """``user_id, item_id, _nu``: distinct engagements of the users inside the item-count range."""
    events = data.events.filter(F.col(S.BEHAVIOR).isin(list(p.behaviors)))
    if p.window_days is not None:
        events = events.filter(F.col(S.TS) >= F.lit(data.now - p.window_days * 86400))
    pairs = events.select(S.USER, S.ITEM).distinct()
    return (pairs.withColumn("_nu", F.count(F.lit(1)).over(Window.partitionBy(S.USER)))
            .filter(F.col("_nu").between(p.min_user_items, p.max_user_items)))


def sample_users(rows: DataFrame, cap: int, seed: int) -> DataFrame:
    """``rows`` with each item's users cut to the ``cap`` with the smallest seeded hash key."""
    by_item = Window.partitionBy(S.ITEM)
    key = Window.partitionBy(S.ITEM).orderBy(F.xxhash64(F.lit(seed), S.USER, S.ITEM), S.USER)
    return (rows.withColumn("_users", F.count(F.lit(1)).over(by_item))
            .withColumn("_k", F.when(F.col("_users") > cap, F.row_number().over(key)).otherwise(F.lit(1)))
            .filter(F.col("_k") <= cap).drop("_users", "_k"))


def common_items(rows: DataFrame) -> DataFrame:
    """``user_id, _v, item_id``: every item two users u < v both engaged with."""
    other = rows.select(F.col(S.USER).alias(OTHER), S.ITEM)
    return (rows.select(S.USER, S.ITEM).join(other, S.ITEM)
            .filter(F.col(S.USER) < F.col(OTHER)).select(S.USER, OTHER, S.ITEM))


def pair_weights(data: SparkData, rows: DataFrame, common: DataFrame, p: SwingParams) -> DataFrame:
    """``user_id, _v, _c``: ``c_uv`` of every user pair sharing at least two items."""
    weights = numpy_lookup(data.spark, distinct_values(rows, "_nu"), lambda n: user_weight(n, p), "_w")
    users = (rows.select(S.USER, F.col("_nu").cast("double").alias("_nu")).distinct()
             .join(weights, F.col("_nu") == F.col("_key")).select(S.USER, "_w"))
    overlap = (common.groupBy(S.USER, OTHER).agg(F.count(F.lit(1)).cast("double").alias("_o"))
               .filter(F.col("_o") >= 2))
    w_v = users.select(F.col(S.USER).alias(OTHER), F.col("_w").alias("_wv"))
    return (overlap.join(users, S.USER).join(w_v, OTHER)
            .select(S.USER, OTHER, pair_weight(F.col("_w"), F.col("_wv"), F.col("_o"), p).alias("_c")))


def swing_scores(data: SparkData, p: SwingParams) -> DataFrame:
    """``item_id, neighbor_id, score``: sim(i, j) for every item pair i != j, untruncated."""
    rows = engagement(data, p)
    common = common_items(rows)
    pairs = pair_weights(data, rows, common, p)
    sampled = common_items(sample_users(rows, p.max_users_per_item, data.seed))
    targets = common.select(S.USER, OTHER, F.col(S.ITEM).alias(S.NEIGHBOR))
    terms = (sampled.join(pairs, [S.USER, OTHER]).join(targets, [S.USER, OTHER])
             .filter(F.col(S.ITEM) != F.col(S.NEIGHBOR)))
    return terms.groupBy(S.ITEM, S.NEIGHBOR).agg(ordered_sum("_c", S.USER, OTHER).alias(S.SCORE))


def swing_table(data: SparkData, p: SwingParams) -> DataFrame:
    """The Swing i2i table ``item_id, neighbor_id, score, rank``."""
    return finish_table(swing_scores(data, p), p.top_k, p.normalize)


__all__ = ["common_items", "engagement", "pair_weights", "sample_users", "swing_scores", "swing_table"]
