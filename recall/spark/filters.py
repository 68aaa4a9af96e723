"""The mechanism filters of :mod:`recall.filters` on Spark: purchase, blacklist, diversity, budget.

- **Purchase**: the (user, category) blocks -- last purchase per (user, key), the
  category's period (explicit, estimated as the clipped median repurchase interval,
  or the default), lifted by ``unblock_clicks`` later clicks -- are joins and
  aggregations; candidates are removed by an anti-join on (user, key), where the
  key is the category or, without one, the item itself.
- **Blacklist**: the file is small and read on the driver; candidates are removed by
  broadcast anti-joins on the item and the category.
- **Diversity**: the greedy walk down each user's list, by rounds of window sums
  over the rows partitioned by user until nothing changes (the local engine's
  fixed-point scheme, see :func:`diversity_filter`).

Then each user keeps the ``budget`` best-ranked survivors, re-ranked 1..n.
"""

from __future__ import annotations

import logging

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from recall import schema as S
from recall.errors import RecallError
from recall.sections import BlacklistConfig, DiversityConfig, FiltersConfig, PurchaseFilterConfig
from recall.filters import DAY, DEMOTED, FILTERS, KEY, diversity_caps
from recall.spark.data import SparkData

log = logging.getLogger("recall")


def with_key(frame: DataFrame, categories: DataFrame | None) -> DataFrame:
    """Add ``_block_key`` ("c<category>", or "i<item>" where the category is unknown) and ``category_id``."""
    item_key = F.concat(F.lit("i"), F.col(S.ITEM).cast("string"))
    if categories is None:
        return frame.withColumn(KEY, item_key).withColumn(S.CATEGORY, F.lit(None).cast("string"))
    frame = frame.join(F.broadcast(categories), S.ITEM, "left")
    return frame.withColumn(KEY, F.when(F.col(S.CATEGORY).isNotNull(), F.concat(F.lit("c"), F.col(S.CATEGORY)))
                            .otherwise(item_key))


def estimated_periods(data: SparkData, cfg: PurchaseFilterConfig) -> DataFrame | None:
    """``category_id, period_days``: the clipped median repurchase interval, or the default period."""
    categories = data.item_side(S.CATEGORY)
    if categories is None:
        return None
    buys = (data.events.filter((F.col(S.BEHAVIOR) == "buy") & (F.col(S.TS) <= F.lit(data.now)))
            .select(S.USER, S.ITEM, S.TS)
            .join(F.broadcast(categories), S.ITEM)
            .filter(F.col(S.CATEGORY).isNotNull()))
    order = Window.partitionBy(S.USER, S.CATEGORY).orderBy(S.TS)
    gaps = (buys.withColumn("_gap", F.col(S.TS) - F.lag(S.TS).over(order))
            .filter(F.col("_gap") >= F.lit(cfg.same_occasion_hours * 3600)))
    stats = (buys.select(S.CATEGORY).distinct()
             .join(gaps.groupBy(S.CATEGORY).agg(F.count(F.lit(1)).alias("_intervals"),
                                                (F.median("_gap") / F.lit(DAY)).alias("_median")),
                   S.CATEGORY, "left")
             .fillna(0, subset=["_intervals"]))
    clipped = F.least(F.greatest(F.col("_median"), F.lit(cfg.min_period_days)), F.lit(cfg.max_period_days))
    period = F.when(F.col("_intervals") >= cfg.min_intervals, clipped).otherwise(F.lit(cfg.default_period_days))
    return stats.select(S.CATEGORY, period.cast("double").alias("period_days"))


def purchase_blocks(data: SparkData, cfg: PurchaseFilterConfig) -> DataFrame:
    """``user_id, _block_key``: what a purchase blocks at ``now`` (see :func:`recall.filters.purchase_blocks`)."""
    import pyarrow as pa

    spark = data.spark
    categories = data.item_side(S.CATEGORY)
    events = with_key(data.events.filter(F.col(S.TS) <= F.lit(data.now)).select(S.USER, S.ITEM, S.BEHAVIOR, S.TS),
                      categories)
    last_buy = (events.filter(F.col(S.BEHAVIOR) == "buy")
                .groupBy(S.USER, KEY).agg(F.first(S.CATEGORY).alias(S.CATEGORY), F.max(S.TS).alias("_last_buy")))
    def table(periods_days: dict[str, float]):
        # From Arrow: a local relation built by the JVM (a list of tuples would start Python workers).
        return spark.createDataFrame(pa.table({S.CATEGORY: pa.array(list(periods_days), pa.string()),
                                               "period_days": pa.array(list(periods_days.values()), pa.float64())}))

    periods = table({})
    if cfg.estimate:
        estimated = estimated_periods(data, cfg)
        if estimated is not None:
            periods = estimated
    if cfg.periods_days:  # explicit periods override estimates
        explicit = table({k: float(v) for k, v in cfg.periods_days.items()})
        periods = explicit.unionByName(periods.join(explicit, S.CATEGORY, "left_anti"))
    until = F.col("_last_buy") + F.coalesce(F.col("period_days"), F.lit(cfg.default_period_days)) * F.lit(DAY)
    blocks = (last_buy.join(F.broadcast(periods), S.CATEGORY, "left")
              .withColumn("_until", until)
              .filter(F.col("_until") > F.lit(data.now)))
    if cfg.unblock_clicks > 0:
        clicks = (events.filter(F.col(S.BEHAVIOR).isin(list(cfg.unblock_behaviors)))
                  .join(blocks.select(S.USER, KEY, "_last_buy"), [S.USER, KEY])
                  .filter(F.col(S.TS) > F.col("_last_buy"))
                  .groupBy(S.USER, KEY).agg(F.count(F.lit(1)).alias("_clicks")))
        blocks = (blocks.join(clicks, [S.USER, KEY], "left")
                  .filter(F.coalesce(F.col("_clicks"), F.lit(0)) < cfg.unblock_clicks))
    return blocks.select(S.USER, KEY)


def purchase_filter(frame: DataFrame, data: SparkData, cfg: PurchaseFilterConfig) -> DataFrame:
    keyed = with_key(frame, data.item_side(S.CATEGORY))
    return keyed.join(purchase_blocks(data, cfg), [S.USER, KEY], "left_anti").select(*frame.columns)


def blacklist_filter(frame: DataFrame, data: SparkData, cfg: BlacklistConfig) -> DataFrame:
    import polars as pl

    from recall.filters import read_blacklist

    item_type = dict(frame.dtypes)[S.ITEM]
    items, categories = read_blacklist(cfg.path, pl.String if item_type == "string" else pl.Int64)
    spark = data.spark
    if items.len():
        listed = spark.createDataFrame(pl.DataFrame({S.ITEM: items}).to_arrow())
        frame = frame.join(F.broadcast(listed), S.ITEM, "left_anti")
    if categories.len():
        side = data.item_side(S.CATEGORY)
        if side is None:
            raise RecallError(f"blacklist file '{cfg.path}' lists categories but the items table has no "
                              "'category_id' column, so they cannot be matched; add category_id to the "
                              "items table or list the items by item_id")
        banned = spark.createDataFrame(pl.DataFrame({S.CATEGORY: categories}).to_arrow())
        blocked_items = side.join(F.broadcast(banned), S.CATEGORY).select(S.ITEM)
        frame = frame.join(F.broadcast(blocked_items), S.ITEM, "left_anti")
    return frame


def diversity_filter(frame: DataFrame, data: SparkData, cfg: DiversityConfig) -> DataFrame:
    """Walking each list best rank first, a row is within the caps when fewer than the cap rows
    within the caps precede it in its category and in its brand (unknown values uncapped);
    the others are marked ``DEMOTED`` (ranked below every row within the caps by the budget cut).

    The greedy walk is computed as in :func:`recall.filters._diversity_filter`, by rounds:
    every round recounts, for all rows at once, the kept rows above each row in its
    (user, category) and (user, brand) -- window sums over data partitioned by user,
    so no round shuffles -- and re-decides. A row's decision depends only on the rows
    above it, so after round k the first k rows of every list are final; the rounds
    stop at the fixed point (in practice a handful). Each round is persisted, so the
    plan does not grow.
    """
    from pyspark import StorageLevel

    caps = diversity_caps(cfg, data.item_side)
    if not caps:
        return frame
    columns = frame.columns
    work = frame
    for column, _, side in caps:
        work = work.join(F.broadcast(side.withColumnRenamed(column, f"_{column}")), S.ITEM, "left")
    work = work.repartition(S.USER).withColumn("_kept", F.lit(True)).persist(StorageLevel.MEMORY_AND_DISK)
    # The fixed point comes after at most (longest list + 1) rounds, so the loop ends.
    while True:
        decided = F.lit(True)
        for column, cap, _ in caps:
            above = Window.partitionBy(S.USER, f"_{column}").orderBy(S.RANK, S.ITEM).rowsBetween(
                Window.unboundedPreceding, -1)
            before = F.coalesce(F.sum(F.col("_kept").cast("int")).over(above), F.lit(0))
            decided = decided & (F.col(f"_{column}").isNull() | (before < cap))
        following = work.withColumn("_next", decided).persist(StorageLevel.MEMORY_AND_DISK)
        changed = following.filter(F.col("_next") != F.col("_kept")).count()
        work.unpersist()
        work = following.drop("_kept").withColumnRenamed("_next", "_kept")
        if changed == 0:
            break
    return work.withColumn(DEMOTED, ~F.col("_kept")).select(*columns, DEMOTED)


def apply_filters(candidates: DataFrame, data: SparkData, cfg: FiltersConfig, budget: int
                  ) -> tuple[DataFrame, dict[str, DataFrame]]:
    """Run the enabled filters and the budget cut; also return what each step kept, for the counts.

    Returns the filtered table (ranks 1..n per user, at most ``budget`` rows per
    user) and, per step name, the frame after that step (so the caller can count
    removals with actions of its choosing; the diversity step's frame keeps every
    row, the over-cap ones marked ``DEMOTED``, and ``"ranked"`` is every survivor
    with its final rank before the budget cut).
    """
    if budget < 1:
        raise RecallError(f"the candidate budget must be at least 1 (got {budget}); set candidates_per_user")
    frame = candidates
    stages = {}
    steps = ((cfg.purchase, purchase_filter), (cfg.blacklist, blacklist_filter), (cfg.diversity, diversity_filter))
    for name, (section, run) in zip(FILTERS, steps):
        if section.enabled:
            frame = run(frame, data, section)
            stages[name] = frame
    columns = [c for c in frame.columns if c != DEMOTED]
    if DEMOTED not in frame.columns:
        frame = frame.withColumn(DEMOTED, F.lit(False))
    order = Window.partitionBy(S.USER).orderBy(DEMOTED, S.RANK, S.ITEM)
    ranked = frame.withColumn(S.RANK, F.row_number().over(order).cast("int"))
    stages["ranked"] = ranked
    return ranked.filter(F.col(S.RANK) <= budget).select(*columns), stages


__all__ = ["apply_filters", "blacklist_filter", "diversity_filter", "estimated_periods", "purchase_blocks",
           "purchase_filter"]
