"""Crowd hot lists on Spark: :mod:`recall.channels.crowd` as aggregations over crowd keys.

Crowds are the prefixes of ``attributes`` (``gender=F,age_band=25-34`` ...; a
missing value ends a user's chain). Per crowd and item, over the window: clicks
and impressions; the score is the smoothed CTR (the global level with a Beta prior
fitted to the items' counts -- a catalogue-sized table, fitted on the driver by
:func:`recall.ctr.fit_beta_prior` -- each finer level shrunk towards its parent's
score) or the share of decayed engaged-user votes (the local channel's volume mode,
with its window widening and decay functions). Supported crowds (``min_support`` clicks by ``min_users``
users; global always) keep their ``top_k`` items. Every known user gets the list of
the finest supported crowd they belong to, back-filled from the coarser ones,
minus engaged items, with a running minimum on the scores.

The hot lists (crowds x top_k rows) are small and are brought to the driver for
the per-crowd files; everything per user stays in Spark.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from recall import schema as S
from recall.channels.crowd import CROWD, GLOBAL, CrowdParams, file_name, usable_attributes, widened_window
from recall.context import ENGAGED
from recall.decay import DAY, halving
from recall.errors import RecallError
from recall.spark.data import SparkData
from recall.spark.ops import long_table

log = logging.getLogger("recall")
LEVEL = "level"


@dataclass
class CrowdTables:
    """What the crowd channel publishes: candidates, and the hot lists as ``crowd, item_id, score, rank``."""

    candidates: DataFrame
    lists: DataFrame  # crowd, level, item_id, score, rank (supported crowds only)
    extra: dict[str, object]  # relative path -> polars frame of one crowd list (small)




def crowd_key(attributes: list[str]):
    """``attr=value,...`` over ``attributes``; null if any value is null; ``global`` for none."""
    if not attributes:
        return F.lit(GLOBAL)
    parts = []
    for position, a in enumerate(attributes):
        parts += [F.lit(("," if position else "") + f"{a}="), F.col(a).cast("string")]
    return F.concat(*parts)  # concat is null as soon as one part is


def known_users(data: SparkData, attributes: list[str]) -> DataFrame:
    """Every user of the events or the users table, with the attribute values (null where unknown)."""
    users = data.events.select(S.USER)
    if data.users is not None:
        users = users.unionByName(data.users.select(S.USER))
    users = users.distinct()
    if attributes:
        users = users.join(data.users.select(S.USER, *[F.col(a).cast("string") for a in attributes]), S.USER, "left")
    return users


def crowd_tables(data: SparkData, p: CrowdParams, n: int, name: str = "crowd") -> CrowdTables:
    """The crowd channel's candidates and hot lists, as :class:`recall.channels.crowd.Crowd` computes them."""
    attributes = usable_attributes(p.attributes, None if data.users is None else data.users.columns, name)
    levels = range(len(attributes) + 1)
    ids = [f"_crowd{level}" for level in levels]
    users = known_users(data, attributes).select(
        S.USER, *[crowd_key(attributes[:level]).alias(ids[level]) for level in levels])
    events, mode = crowd_events(data, p, name)
    events = events.join(users, S.USER, "left")
    support, cells = level_scores(events, ids, mode, p)
    lists, small, extra = hot_lists(data, p, support, cells, name)
    recs = crowd_candidates(data, users, ids, lists, small, n)
    return CrowdTables(candidates=long_table(recs, S.USER, S.ITEM), lists=lists, extra=extra)


def crowd_events(data: SparkData, p: CrowdParams, name: str) -> tuple[DataFrame, str]:
    """``user_id, item_id, _click, _vote`` in the (widened) window, and the mode (``ctr`` or ``volume``).

    CTR mode: impression and click events (``_click`` says which); volume mode: one
    vote per engaged (user, item), decayed by its latest engagement.
    """
    engaged = data.events.filter(F.col(S.BEHAVIOR).isin(*ENGAGED))
    first = engaged.agg(F.min(S.TS).alias("t")).first()["t"]
    days = widened_window(p.window_days, data.now, data.now if first is None else int(first), p.min_support,
                          lambda since: engaged.filter(F.col(S.TS) >= F.lit(since)).count())
    events = data.events
    if days is not None:
        events = events.filter(F.col(S.TS) >= F.lit(data.now - days * DAY))
    window = "all" if days is None else f"the last {days:g}"
    has_impressions = events.filter(F.col(S.BEHAVIOR) == "impression").limit(1).count() > 0
    if p.rank_by == "ctr" and not has_impressions:
        raise RecallError(f"channels.{name}.rank_by = 'ctr' needs impression events in {window} days "
                          "and there are none; use rank_by = 'auto' or 'volume'")
    mode = p.rank_by if p.rank_by != "auto" else ("ctr" if has_impressions else "volume")
    if mode == "ctr":
        events = (events.filter(F.col(S.BEHAVIOR).isin("impression", "click"))
                  .select(S.USER, S.ITEM, (F.col(S.BEHAVIOR) == "click").alias("_click"), F.lit(0.0).alias("_vote")))
    else:
        # One vote per engaged (user, item), decayed by its latest engagement (the local channel's rows).
        half_life = None if p.half_life_days is None else p.half_life_days * DAY
        events = (events.filter(F.col(S.BEHAVIOR).isin(*ENGAGED)).groupBy(S.USER, S.ITEM)
                  .agg(F.max(S.TS).alias("_ts"))
                  .select(S.USER, S.ITEM, F.lit(True).alias("_click"),
                          (F.lit(1.0) * halving(F.lit(data.now) - F.col("_ts"), half_life)).alias("_vote")))
    if events.filter("_click").limit(1).count() == 0:
        log.warning("%s: no clicks in %s days, so every hot list is empty; widen channels.%s.window_days",
                    name, window, name)
    return events, mode


def level_scores(events: DataFrame, ids: list[str], mode: str, p: CrowdParams) -> tuple[list, list]:
    """Per level (coarse to fine): each crowd's support (clicks, users) and its (crowd, item) scores.

    The global level's CTR is smoothed with a Beta prior fitted on the driver, each finer
    level's shrunk towards its parent crowd's score (:mod:`recall.ctr`); volume mode
    scores are click shares.
    """
    from recall.ctr import fit_beta_prior, posterior_mean, shrunk

    support, cells, parent = [], [], None
    for level, crowd in enumerate(ids):
        scoped = events.filter(F.col(crowd).isNotNull())
        support.append(scoped.filter("_click").groupBy(F.col(crowd).alias(CROWD))
                       .agg(F.count(F.lit(1)).alias("_clicks"), F.countDistinct(S.USER).alias("_users"))
                       .withColumn(LEVEL, F.lit(level)))
        group = [F.col(crowd).alias(CROWD)] + ([F.col(ids[level - 1]).alias("_parent")] if level else [])
        counts = (scoped.groupBy(*group, S.ITEM)
                  .agg(F.sum(F.col("_click").cast("double")).alias("_c"),
                       F.sum((~F.col("_click")).cast("double")).alias("_n"),
                       F.sum("_vote").alias("_v")))
        if mode == "volume":
            score = F.col("_v") / F.sum("_v").over(Window.partitionBy(CROWD))
        else:
            clicks = F.least(F.col("_c"), F.col("_n"))
            if level == 0:
                # Catalogue-sized (one row per item with events), in item order as the local fit sees it.
                per_item = counts.select(S.ITEM, F.least(F.col("_c"), F.col("_n")).alias("c"), F.col("_n").alias("n"))
                table = per_item.orderBy(S.ITEM).toArrow()
                prior = fit_beta_prior(table.column("c").to_numpy(), table.column("n").to_numpy(),
                                       method=p.prior_method, min_items=p.min_prior_items)
                score = posterior_mean(clicks, F.col("_n"), F.lit(prior.a), F.lit(prior.b))
            else:
                counts = counts.join(parent, ["_parent", S.ITEM], "left")
                score = shrunk(clicks, F.col("_n"), F.col("_parent_score"), F.lit(p.prior_strength))
        counts = counts.withColumn(S.SCORE, score)
        parent = counts.select(F.col(CROWD).alias("_parent"), S.ITEM, F.col(S.SCORE).alias("_parent_score"))
        cells.append(counts.select(CROWD, F.lit(level).alias(LEVEL), S.ITEM, "_c", S.SCORE))
    return support, cells


def hot_lists(data: SparkData, p: CrowdParams, support: list, cells: list, name: str):
    """The supported crowds' top-K lists: as a Spark table, as polars (small), and the ``hot/*`` files."""
    import polars as pl

    crowds = support[0]
    for frame in support[1:]:
        crowds = crowds.unionByName(frame)
    supported = (crowds.filter(((F.col("_clicks") >= p.min_support) & (F.col("_users") >= p.min_users))
                               | (F.col(LEVEL) == 0))
                 .select(CROWD, LEVEL))
    all_cells = cells[0]
    for frame in cells[1:]:
        all_cells = all_cells.unionByName(frame)
    order = Window.partitionBy(CROWD).orderBy(F.col(S.SCORE).desc(), F.col(S.ITEM).asc())
    lists = (all_cells.filter(F.col("_c") > 0)
             .join(F.broadcast(supported), [CROWD, LEVEL])
             .withColumn(S.RANK, F.row_number().over(order).cast("int"))
             .filter(F.col(S.RANK) <= p.top_k)
             .select(CROWD, LEVEL, S.ITEM, F.col(S.SCORE).cast("double").alias(S.SCORE), S.RANK))
    small = pl.from_arrow(lists.toArrow()).sort(LEVEL, CROWD, S.RANK)  # crowds x top_k rows
    lists = data.spark.createDataFrame(small.to_arrow())
    keys = small[CROWD].unique(maintain_order=True).to_list()
    if len(keys) > p.max_crowd_files:
        log.info("%s: %d crowds; writing hot/%s.parquet and hot/crowds.parquet only", name, len(keys), GLOBAL)
        keys = [GLOBAL]
    extra = {f"hot/{file_name(key)}.parquet": small.filter(pl.col(CROWD) == key).select(S.ITEM, S.SCORE, S.RANK)
             for key in keys}
    extra["hot/crowds.parquet"] = small.select(CROWD, S.ITEM, S.SCORE, S.RANK)
    return lists, small, extra


def crowd_candidates(data: SparkData, users: DataFrame, ids: list[str], lists: DataFrame, small, n: int
                     ) -> DataFrame:
    """Each user's list: their finest supported crowd's, then its ancestors', engaged items out, top ``n``."""
    import polars as pl

    # Each user's finest supported crowd (coarse to fine: the deepest supported one wins).
    levels = range(len(ids))
    supported_keys = small.select(CROWD).unique()
    marked = users
    for level in levels:
        marked = marked.join(F.broadcast(data.spark.createDataFrame(
            supported_keys.with_columns(pl.lit(True).alias(f"_ok{level}")).rename({CROWD: ids[level]}).to_arrow())),
            ids[level], "left")
    finest = F.col(ids[0])
    for level in levels[1:]:
        finest = F.when(F.col(f"_ok{level}").isNotNull(), F.col(ids[level])).otherwise(finest)
    marked = marked.withColumn("_finest", finest)
    ancestry = marked.select("_finest", F.explode(F.array(*[F.col(c) for c in ids])).alias(CROWD)).distinct()
    chain_order = Window.partitionBy("_finest").orderBy(F.col(LEVEL).desc(), F.col(S.RANK).asc())
    first_seen = Window.partitionBy("_finest", S.ITEM).orderBy(F.col(LEVEL).desc(), F.col(S.RANK).asc())
    chains = (ancestry.join(lists, CROWD)
              .withColumn("_first", F.row_number().over(first_seen)).filter(F.col("_first") == 1)
              .withColumn("_pos", F.row_number().over(chain_order))
              .select("_finest", S.ITEM, S.SCORE, "_pos"))
    by_position = Window.partitionBy(S.USER).orderBy("_pos")
    return (marked.select(S.USER, "_finest")
            .join(F.broadcast(chains), "_finest")
            .join(data.engaged_pairs(), [S.USER, S.ITEM], "left_anti")
            .withColumn(S.RANK, F.row_number().over(by_position))
            .filter(F.col(S.RANK) <= n)
            .withColumn(S.SCORE, F.min(S.SCORE).over(by_position.rowsBetween(Window.unboundedPreceding,
                                                                               Window.currentRow))))


__all__ = ["CrowdTables", "crowd_candidates", "crowd_events", "crowd_tables", "hot_lists", "level_scores"]
