"""Association recall on Spark: the directed, distance-weighted sequence co-occurrence of
:mod:`recall.channels.association`.

Each user's engaged events in (time, item) order are cut into sessions (a gap of
more than ``session_gap_hours`` between consecutive raw events), consecutive
repeats of one item inside a session collapse to one position, and users with
more than ``max_sequence_length`` positions are dropped. For each offset
``d = 1..window`` the positions ``p`` and ``p + d`` of one session are an
equi-join on ``(user, position + d)``, so the work is ``window`` x positions, not
the square of a sequence's length. Pair ``(s_p, s_q)`` adds
``w(u) * base^(d - 1) * forward_weight`` to a(s_p, s_q) and ``... * backward_weight``
to a(s_q, s_p); the sums follow the local engine's order
(:func:`recall.spark.ops.ordered_sum`).
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from recall import schema as S
from recall.channels.association import AssociationParams, directions, distance_weights, popularity_powers
from recall.decay import log_damping
from recall.spark.data import SparkData
from recall.spark.itemcf import finish_table
from recall.spark.ops import distinct_values, lookup, numpy_lookup, ordered_sum


def sequences(data: SparkData, p: AssociationParams) -> DataFrame:
    """``user_id, pos, session, item_id, _len``: the collapsed sequences, one row per position."""
    events = data.events.filter(F.col(S.BEHAVIOR).isin(list(p.behaviors)))
    if p.window_days is not None:
        events = events.filter(F.col(S.TS) >= F.lit(data.now - p.window_days * 86400))
    order = Window.partitionBy(S.USER).orderBy(S.TS, S.ITEM)
    previous_ts, previous_item = F.lag(S.TS).over(order), F.lag(S.ITEM).over(order)
    start = previous_ts.isNull()
    if p.session_gap_hours is not None:
        # Measured between raw events, before collapsing (as the local engine does).
        start = start | ((F.col(S.TS) - previous_ts) > F.lit(p.session_gap_hours * 3600))
    marked = events.select(S.USER, S.ITEM, S.TS, start.alias("_start"), previous_item.alias("_prev"))
    marked = marked.withColumn("session", F.sum(F.col("_start").cast("long")).over(
        order.rowsBetween(Window.unboundedPreceding, Window.currentRow)))
    kept = marked.filter(F.col("_start") | (F.col(S.ITEM) != F.col("_prev")))
    kept = (kept.withColumn("pos", F.row_number().over(order))
            .withColumn("_len", F.count(F.lit(1)).over(Window.partitionBy(S.USER)).cast("double"))
            .filter(F.col("_len") <= p.max_sequence_length))
    return kept.select(S.USER, "pos", "session", S.ITEM, "_len")


def association_scores(data: SparkData, p: AssociationParams) -> DataFrame:
    """``item_id, neighbor_id, score``: a(i, j), popularity-normalised if asked, untruncated.

    The forward table A is summed per pair in the local engine's order (offset,
    then position) and combined as ``a = theta_fwd A + theta_bwd A^T``; ``log1p`` and
    ``**`` come from numpy (:func:`recall.spark.ops.numpy_lookup`).
    """
    seq = sequences(data, p)
    if p.length_normalize:
        weights = numpy_lookup(data.spark, distinct_values(seq, "_len"), log_damping, "_w")
        seq = seq.join(weights, seq["_len"] == weights["_key"]).drop("_key")
    else:
        seq = seq.withColumn("_w", F.lit(1.0))
    offsets = data.spark.range(1, p.window + 1).select(F.col("id").cast("int").alias("_d"))
    first = seq.crossJoin(F.broadcast(offsets)).select(
        S.USER, F.col("pos").alias("_p"), (F.col("pos") + F.col("_d")).alias("pos"), F.col("session").alias("_s1"),
        F.col(S.ITEM).alias("_i1"), "_w", "_d")
    pairs = (first.join(seq.select(S.USER, "pos", F.col("session").alias("_s2"), F.col(S.ITEM).alias("_i2")),
                        [S.USER, "pos"])
             .filter((F.col("_s1") == F.col("_s2")) & (F.col("_i1") != F.col("_i2"))))
    distance = lookup(distance_weights(p), F.col("_d") - 1)
    forward = (pairs.select("_i1", "_i2", "_d", S.USER, "_p", (F.col("_w") * distance).alias("_t"))
               .groupBy("_i1", "_i2").agg(ordered_sum("_t", "_d", S.USER, "_p").alias("_a")))
    parts = []
    for theta, transposed in directions(p):
        trigger, target = ("_i2", "_i1") if transposed else ("_i1", "_i2")
        parts.append(forward.select(F.col(trigger).alias(S.ITEM), F.col(target).alias(S.NEIGHBOR),
                                    (F.col("_a") * F.lit(theta)).alias("_bwd" if transposed else "_fwd")))
    if len(parts) == 2:
        scores = parts[0].join(parts[1], [S.ITEM, S.NEIGHBOR], "full").select(
            S.ITEM, S.NEIGHBOR, F.when(F.col("_fwd").isNull(), F.col("_bwd"))
            .when(F.col("_bwd").isNull(), F.col("_fwd")).otherwise(F.col("_fwd") + F.col("_bwd")).alias(S.SCORE))
    else:
        scores = parts[0].withColumnRenamed(parts[0].columns[-1], S.SCORE)
    if p.popularity_normalize:
        popularity = seq.select(S.USER, S.ITEM).distinct().groupBy(S.ITEM).agg(
            F.count(F.lit(1)).cast("double").alias("_n"))
        values = distinct_values(popularity, "_n")
        powers = numpy_lookup(data.spark, values, lambda n: popularity_powers(n, p.alpha)[0], "_pi").join(
            numpy_lookup(data.spark, values, lambda n: popularity_powers(n, p.alpha)[1], "_pj"), "_key")
        popularity = popularity.join(F.broadcast(powers), popularity["_n"] == powers["_key"])
        n_i = popularity.select(S.ITEM, "_pi")
        n_j = popularity.select(F.col(S.ITEM).alias(S.NEIGHBOR), "_pj")
        scores = (scores.join(n_i, S.ITEM).join(n_j, S.NEIGHBOR)
                  .select(S.ITEM, S.NEIGHBOR, (F.col(S.SCORE) / (F.col("_pi") * F.col("_pj"))).alias(S.SCORE)))
    return scores


def association_table(data: SparkData, p: AssociationParams) -> DataFrame:
    """The association i2i table ``item_id, neighbor_id, score, rank``."""
    return finish_table(association_scores(data, p), p.top_k, p.normalize)


__all__ = ["association_scores", "association_table", "sequences"]
