"""DataFrame building blocks shared by the Spark channels: deterministic sums, top-K, ranks.

Two choices make the Spark tables equal to the local engine's, not merely close:

- **Deterministic sums.** Spark adds a group's values in whatever order its
  shuffle delivers them, so two mathematically equal scores can differ in the
  last bit and the "ties to the smaller id" rule would then depend on the
  partitioning. :func:`exact_sum` adds a group's terms in sorted order: equal
  multisets of terms give bit-identical sums on any cluster.
- **Ordering.** Ranks are ``row_number`` over ``score`` descending, then the id
  ascending, which is :func:`recall.sparse.csr_to_frame`'s order (the local
  engine's item indices are the sorted ids).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from recall import schema as S


def exact_sum(column: str | Column) -> Column:
    """Sum of a group's values, added in ascending order (independent of partitioning)."""
    return F.aggregate(F.array_sort(F.collect_list(column)), F.lit(0.0).cast("double"),
                       lambda total, value: total + value)


def ranked(key: str, other: str, score: str = S.SCORE) -> Column:
    """``row_number`` within ``key`` by ``score`` descending, ties to the smaller ``other``."""
    return F.row_number().over(Window.partitionBy(key).orderBy(F.col(score).desc(), F.col(other).asc()))


def top_k(frame: DataFrame, key: str, other: str, k: int, score: str = S.SCORE) -> DataFrame:
    """The ``k`` best positive-score rows per ``key`` (ties to the smaller ``other``), ranked 1..k.

    The Spark twin of :func:`recall.sparse.top_k_per_row` followed by
    :func:`recall.sparse.csr_to_frame`.
    """
    return (frame.filter(F.col(score) > 0)
            .withColumn(S.RANK, ranked(key, other, score))
            .filter(F.col(S.RANK) <= k))


def rerank(frame: DataFrame, key: str, other: str, score: str = S.SCORE) -> DataFrame:
    """Recompute ``rank`` after scores changed (e.g. row normalisation)."""
    return frame.withColumn(S.RANK, ranked(key, other, score))


def normalise_max(frame: DataFrame, key: str, score: str = S.SCORE) -> DataFrame:
    """Divide each ``key``'s scores by their maximum, so its best row scores 1.

    Multiplies by the reciprocal, as :func:`recall.sparse.row_normalise_max` does,
    so the values match it bit for bit.
    """
    row_max = F.max(score).over(Window.partitionBy(key))
    return frame.withColumn(score, F.col(score) * (F.lit(1.0) / row_max))


def long_table(frame: DataFrame, key: str, other: str) -> DataFrame:
    """``key, other, score, rank`` with the published types (rank as int32)."""
    return frame.select(key, other, F.col(S.SCORE).cast("double").alias(S.SCORE),
                        F.col(S.RANK).cast("int").alias(S.RANK))


def lookup(values: list[float], index: Column) -> Column:
    """``values[index]`` from a literal array: the local engine's exact floats, no recomputation."""
    return F.element_at(F.array(*[F.lit(float(v)) for v in values]), (index + 1).cast("int"))


__all__ = ["exact_sum", "long_table", "lookup", "normalise_max", "ranked", "rerank", "top_k"]
