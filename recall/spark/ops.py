"""DataFrame building blocks shared by the Spark channels: deterministic sums, top-K, ranks.

Two choices make the Spark tables equal to the local engine's, not merely close:

- **Deterministic sums.** Spark adds a group's values in whatever order its
  shuffle delivers them, so two mathematically equal scores can differ in the
  last bit and the "ties to the smaller id" rule would then depend on the
  partitioning. :func:`ordered_sum` adds a group's terms in the order of a key
  -- the order the local engine's sparse products add them (e.g. triggers by
  item id), so the sums are bit-identical to the local engine's wherever the
  terms are, and the same on any cluster.
- **Ordering.** Ranks are ``row_number`` over ``score`` descending, then the id
  ascending, which is :func:`recall.sparse.csr_to_frame`'s order (the local
  engine's item indices are the sorted ids).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from recall import schema as S


def ordered_sum(value: str | Column, *keys: str | Column) -> Column:
    """Sum of a group's values added one by one in ascending order of ``keys`` (unique within the group).

    Equal to the local engine's sum when that adds the same terms in the same order,
    and independent of how Spark partitions the data.
    """
    value = F.col(value) if isinstance(value, str) else value
    keys = [F.col(k) if isinstance(k, str) else k for k in keys]
    terms = F.array_sort(F.collect_list(F.struct(*[k.alias(f"k{n}") for n, k in enumerate(keys)],
                                                 value.cast("double").alias("v"))))
    return F.aggregate(terms, F.lit(0.0).cast("double"), lambda total, term: total + term["v"])


def numpy_lookup(spark, values, function, name: str):
    """A small broadcast table ``_key, <name>`` of ``function`` (numpy) over the distinct ``values``.

    For the floats the local engine computes with numpy (``log1p``, ``**``): the JVM's
    ``log1p`` and ``pow`` may differ in the last bit, so they are computed once per
    distinct argument on the driver (counts: a few thousand values at most) and joined.
    """
    import numpy as np
    import pyarrow as pa

    keys = np.asarray(sorted(set(values)), dtype=np.float64)
    result = np.asarray(function(keys), dtype=np.float64)
    # From Arrow: a local relation built by the JVM (a list of tuples would start Python workers).
    return F.broadcast(spark.createDataFrame(pa.table({"_key": keys, name: result})))


def distinct_values(frame: DataFrame, column: str) -> list[float]:
    """The distinct values of a small-cardinality column (counts), brought to the driver."""
    return [row[0] for row in frame.select(F.col(column).cast("double")).distinct().collect()]


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


__all__ = ["distinct_values", "numpy_lookup", "ordered_sum", "long_table", "lookup", "normalise_max", "ranked", "rerank", "top_k"]
