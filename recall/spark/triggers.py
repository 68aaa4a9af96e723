"""The shared trigger expansion on Spark: triggers x i2i table -> per-user candidates.

Mirrors :attr:`recall.context.TrainData.trigger_matrix` and
:func:`recall.interface.expand_triggers`:

- a (user, item) trigger weighs ``max_e bw(b_e) * 0.5 ** (age_e / half_life_days)``
  over the user's events e on the item no older than ``window_days`` (``age`` in days
  at ``now``), behaviours with weight 0 left out; each user keeps the
  ``max_triggers`` strongest (ties to the smaller item);
- ``u2i(u, j) = sum_i trigger(u, i) * sim(i, j)``; items the user engaged with
  (click or deeper, any time) are dropped; the best ``n`` per user are kept (ties
  to the smaller item).

The i2i table is broadcast (catalogue x top_k rows) and the triggers are
partitioned by user, so the join, the per-user sums and the per-user ranking run
without shuffling the expanded rows.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from recall import schema as S
from recall.decay import halving
from recall.spark.data import SparkData
from recall.spark.ops import long_table, ordered_sum, top_k

WEIGHT = "trigger_weight"
# i2i tables above this many rows are shuffle-joined instead of broadcast.
BROADCAST_ROWS = 20_000_000


def trigger_table(data: SparkData) -> DataFrame:
    """``user_id, item_id, trigger_weight``: each user's strongest recent behaviours."""
    cfg = data.triggers
    age_days = (F.lit(data.now) - F.col(S.TS)) / F.lit(86400.0)
    strongest = (data.events
                 .filter(age_days <= F.lit(float(cfg.window_days)))
                 .join(data.behavior_weights(cfg.behavior_weights), S.BEHAVIOR)
                 .filter(F.col("bw") > 0)
                 .withColumn(WEIGHT, F.col("bw") * halving(age_days, float(cfg.half_life_days)))
                 .groupBy(S.USER, S.ITEM).agg(F.max(WEIGHT).alias(WEIGHT)))
    order = Window.partitionBy(S.USER).orderBy(F.col(WEIGHT).desc(), F.col(S.ITEM).asc())
    return (strongest.withColumn("_n", F.row_number().over(order))
            .filter(F.col("_n") <= cfg.max_triggers).drop("_n"))


def expand_triggers(data: SparkData, i2i: DataFrame, n: int, *, exclude_interacted: bool = True,
                    i2i_rows: int | None = None) -> DataFrame:
    """``user_id, item_id, score, rank``: the top ``n`` items per user by summed trigger x i2i score.

    ``i2i`` holds ``item_id, neighbor_id, score``; ``i2i_rows`` (if known) decides
    whether it is broadcast.
    """
    triggers = trigger_table(data).repartition(S.USER)
    table = i2i.select(S.ITEM, F.col(S.NEIGHBOR), F.col(S.SCORE).alias("_sim"))
    if i2i_rows is None or i2i_rows <= BROADCAST_ROWS:
        table = F.broadcast(table)
    terms = (triggers.join(table, S.ITEM)
             .select(S.USER, F.col(S.ITEM).alias("_trigger"), F.col(S.NEIGHBOR).alias("_item"),
                     (F.col(WEIGHT) * F.col("_sim")).alias("_term")))
    # Triggers added in item order, as the local product triggers @ similarity adds them.
    scores = (terms.groupBy(S.USER, "_item").agg(ordered_sum("_term", "_trigger").alias(S.SCORE))
              .withColumnRenamed("_item", S.ITEM))
    if exclude_interacted:
        scores = scores.join(data.engaged_pairs(), [S.USER, S.ITEM], "left_anti")
    return long_table(top_k(scores, S.USER, S.ITEM, n), S.USER, S.ITEM)


__all__ = ["expand_triggers", "trigger_table"]
