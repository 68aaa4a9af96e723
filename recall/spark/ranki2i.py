"""RankI2I on Spark: the itemCF similarity times the smoothed CTR of the recalled item
(:mod:`recall.channels.ranki2i`).

``score(i, j) = sim(i, j) * ctr(i, j) ** ctr_power``, truncated to ``top_k`` after the
product and optionally row-normalised. The item CTRs come from per-item counts (a
catalogue-sized table: the Beta prior is fitted on the driver with
:func:`recall.ctr.fit_beta_prior` and the smoothed rates go back as a broadcast
table). The pair CTRs come from the attribution join: each target impression or
click of j at time t, joined on the user with the engagements of other items in
``[t - attribution_hours, t)`` -- all of them once per trigger item, or only the
most recent -- counted per (trigger, target) and shrunk towards ``ctr_j``.
"""

from __future__ import annotations

import logging

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from recall import schema as S
from recall.channels.ranki2i import RankI2IParams, ctr_factor
from recall.ctr import shrunk
from recall.spark.data import SparkData
from recall.spark.itemcf import category_side, cooccurrence, finish_table

log = logging.getLogger("recall")
CTR = "_ctr"


def ctr_events(data: SparkData, p: RankI2IParams) -> DataFrame:
    if p.ctr_window_days is None:
        return data.events
    return data.events.filter(F.col(S.TS) >= F.lit(data.now - p.ctr_window_days * 86400))


def item_ctr(data: SparkData, p: RankI2IParams, events: DataFrame, name: str) -> tuple[DataFrame | None, str, float]:
    """``item_id, _ctr`` (smoothed), the CTR source, and the CTR of an item without counts.

    Returns ``(None, "none", 1.0)`` when there is no CTR signal at all.
    """
    import numpy as np
    import polars as pl

    from recall.ctr import fit_beta_prior

    has_impressions = events.filter(F.col(S.BEHAVIOR) == "impression").limit(1).count() > 0
    if has_impressions:
        counts = (events.filter(F.col(S.BEHAVIOR).isin("impression", "click"))
                  .groupBy(S.ITEM)
                  .agg(F.sum((F.col(S.BEHAVIOR) == "click").cast("double")).alias("_c"),
                       F.sum((F.col(S.BEHAVIOR) == "impression").cast("double")).alias("_n"))
                  .select(S.ITEM, F.least("_c", "_n").alias("_c"), "_n"))
        source = "pair" if p.pair_ctr else "item"
    else:
        deep = list(p.proxy_behaviors)
        counts = (events.filter(F.col(S.BEHAVIOR).isin(deep + ["click"]))
                  .groupBy(S.USER, S.ITEM).agg(F.max(F.col(S.BEHAVIOR).isin(deep).cast("int")).alias("_deep"))
                  .groupBy(S.ITEM).agg(F.sum("_deep").cast("double").alias("_c"),
                                       F.count(F.lit(1)).cast("double").alias("_n")))
        source = "proxy"
    # Catalogue-sized: one row per item with events, in item order as the local fit sees it.
    table = pl.from_arrow(counts.orderBy(S.ITEM).toArrow())
    clicks, shown = table["_c"].to_numpy(), table["_n"].to_numpy()
    if source == "proxy":
        if clicks.sum() == 0:
            log.warning("%s: no impressions and no %s events in the CTR window; the CTR factor is 1 "
                        "and the table is plain itemCF", name, "/".join(p.proxy_behaviors))
            return None, "none", 1.0
        log.warning("%s: no impression events in the CTR window, so no CTR; using the deep-action "
                    "rate (%s per engaged user) of the target item as a proxy", name, "/".join(p.proxy_behaviors))
    prior = fit_beta_prior(clicks, shown, method=p.prior_method, min_items=p.min_prior_items)
    smoothed = prior.smooth(clicks, shown)
    frame = data.spark.createDataFrame(
        table.select(S.ITEM, pl.Series(CTR, np.asarray(smoothed, dtype=np.float64))).to_arrow())
    return frame, source, float(prior.smooth(np.zeros(1), np.zeros(1))[0])


def attributed_counts(data: SparkData, events: DataFrame, p: RankI2IParams) -> DataFrame:
    """``item_id`` (trigger), ``neighbor_id`` (target), ``_c``, ``_n``: target events credited to triggers."""
    horizon = int(round(p.attribution_hours * 3600))
    targets = (events.filter(F.col(S.BEHAVIOR).isin("impression", "click"))
               .select(S.USER, F.col(S.ITEM).alias(S.NEIGHBOR), S.TS, S.BEHAVIOR))
    first_target = targets.agg(F.min(S.TS).alias("_t0"))
    engagements = (data.events.filter(F.col(S.BEHAVIOR).isin(list(p.behaviors)))
                   .crossJoin(F.broadcast(first_target))
                   .filter(F.col(S.TS) >= F.col("_t0") - F.lit(horizon))
                   .select(S.USER, S.ITEM, F.col(S.TS).alias("_ets")).distinct())
    joined = (targets.join(engagements, S.USER)
              .filter((F.col("_ets") >= F.col(S.TS) - F.lit(horizon)) & (F.col("_ets") < F.col(S.TS))
                      & (F.col(S.ITEM) != F.col(S.NEIGHBOR))))
    event = [S.USER, S.NEIGHBOR, S.TS, S.BEHAVIOR]  # events are unique rows: the tuple is the event
    if p.attribution == "last":
        latest = Window.partitionBy(*event).orderBy(F.col("_ets").desc(), F.col(S.ITEM).asc())
        joined = joined.withColumn("_n", F.row_number().over(latest)).filter(F.col("_n") == 1)
    else:
        joined = joined.select(*event, S.ITEM).distinct()
    counts = joined.groupBy(S.ITEM, S.NEIGHBOR).agg(
        F.sum((F.col(S.BEHAVIOR) == "click").cast("double")).alias("_c"),
        F.sum((F.col(S.BEHAVIOR) == "impression").cast("double")).alias("_n"))
    return counts.select(S.ITEM, S.NEIGHBOR, F.least("_c", "_n").alias("_c"), "_n")


def ranki2i_table(data: SparkData, p: RankI2IParams, name: str = "ranki2i") -> DataFrame:
    """The RankI2I i2i table ``item_id, neighbor_id, score, rank``."""
    categories = category_side(data, name, p)
    events = ctr_events(data, p)
    items, source, default = item_ctr(data, p, events, name)
    sim = cooccurrence(data, p, categories)
    if items is None:
        weighted = sim
    else:
        targets = items.select(F.col(S.ITEM).alias(S.NEIGHBOR), F.col(CTR).alias("_item_ctr"))
        factor = F.coalesce(F.col("_item_ctr"), F.lit(default))
        scored = sim.join(F.broadcast(targets), S.NEIGHBOR, "left")
        if source == "pair":
            pairs = attributed_counts(data, events, p)
            scored = scored.join(pairs, [S.ITEM, S.NEIGHBOR], "left")
            # Pairs never attributed keep the item CTR.
            pair = shrunk(F.col("_c"), F.col("_n"), factor, F.lit(p.pair_prior_strength))
            factor = F.when(F.col("_n").isNotNull(), pair).otherwise(factor)
        factor = ctr_factor(factor, p.ctr_power)
        weighted = scored.select(S.ITEM, S.NEIGHBOR, (F.col(S.SCORE) * factor).alias(S.SCORE))
    return finish_table(weighted, p.top_k, p.normalize)


__all__ = ["attributed_counts", "item_ctr", "ranki2i_table"]
