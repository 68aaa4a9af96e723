"""Mechanism filters applied to the merged candidates: purchase, blacklist, diversity, then the budget.

The input is the merge's table ``user_id, item_id, score, rank, source, channels``
with more rows per user than the budget (a reserve). The filters run in this order,
each on what the previous one left:

1. **Personalised purchase filter.** With ``t_c`` the user's last purchase in
   category ``c`` (at or before ``now``), candidates of ``c`` are blocked while

       now < t_c + period(c)   and   clicks_c(t_c, now] < unblock_clicks

   where ``clicks_c`` counts the user's ``unblock_behaviors`` events on items of ``c``
   strictly after ``t_c`` (he keeps clicking: still interested, the block is lifted;
   ``unblock_clicks = 0`` never lifts it). ``period(c)`` is ``periods_days[c]`` if given,
   else, with ``estimate``, the median repurchase interval of ``c``: per user, the gaps
   between consecutive buys in ``c`` of at least ``same_occasion_hours`` (shorter gaps
   are one basket, not a repurchase), pooled over users, median clipped to
   ``[min_period_days, max_period_days]``, used when ``c`` has ``min_intervals`` gaps or
   more; else ``default_period_days``. Items without a category (no ``category_id``
   column, or a null) are their own "category": only the bought item is blocked.
2. **Blacklist.** Rows of a CSV/Parquet file name an ``item_id`` and/or a
   ``category_id``; candidates matching either are dropped.
3. **Diversity cap (scattering).** Walking a user's list best rank first, a candidate
   is within the caps when fewer than ``max_per_category`` candidates within the caps
   precede it in its category and fewer than ``max_per_brand`` in its brand (0: no
   cap; unknown category/brand: uncapped). Candidates over a cap are demoted, not
   dropped: they move below every candidate within the caps, in their own order, and
   candidates further down the reserve move up into the freed places. So the caps
   hold wherever the reserve has enough other candidates, and a user whose reserve
   runs out of other categories still gets the full budget, topped up with the best
   over-cap candidates (a user whose interest recall is all in two categories would
   otherwise get 80 candidates under a cap of 40).

Then each user keeps the ``budget`` best-ranked survivors, re-ranked 1..n. The
greedy walk of step 3 is computed without a loop over users: every round recounts,
for all rows at once, the kept predecessors in each row's category and brand
(window cumulative sums) and re-decides. A row's decision depends only on rows above
it, so after round k the first k rows of every list are final: the rounds stop at a
fixed point, after at most (longest list + 1) rounds and in practice a handful.

A user left short of the budget whose merged list was cut at ``budget + reserve``
(more candidates exist) is merged again to the full depth of their candidates and
filtered again (:func:`filter_with_refill`): the reserve is sized for typical users,
and a user whose candidates sit mostly in categories they just bought (interest
recall does that) would otherwise get a short list. Only those few users pay.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from recall import schema as S
from recall.sections import BlacklistConfig, DiversityConfig, FiltersConfig, PurchaseFilterConfig
from recall.errors import RecallError
from recall.merge import run_positions

if TYPE_CHECKING:  # annotations only
    from recall.context import TrainData

log = logging.getLogger("recall")

DAY = 86400
FILTERS = ("purchase", "blacklist", "diversity")
DEMOTED = "_over_cap"  # the diversity step's mark: ranked below every row within the caps
KEY = "_block_key"  # what a purchase blocks: "c<category>" or, without a category, "i<item>"


# --------------------------------------------------------------------------- side information

def _side_column(data: TrainData, column: str) -> pl.DataFrame | None:
    """``item_id, <column>`` with the column as text (ids of any type compare alike), or None."""
    if data.items is None or column not in data.items.columns:
        return None
    return data.items.select(S.ITEM, pl.col(column).cast(pl.String))


def _with_key(frame: pl.DataFrame, categories: pl.DataFrame | None) -> pl.DataFrame:
    """Add the purchase-block key: the category, or the item itself where the category is unknown."""
    item_key = pl.concat_str(pl.lit("i"), pl.col(S.ITEM).cast(pl.String))
    if categories is None:
        return frame.with_columns(item_key.alias(KEY), pl.lit(None, dtype=pl.String).alias(S.CATEGORY))
    frame = frame.join(categories, on=S.ITEM, how="left", maintain_order="left")
    return frame.with_columns(
        pl.when(pl.col(S.CATEGORY).is_not_null())
        .then(pl.concat_str(pl.lit("c"), pl.col(S.CATEGORY)))
        .otherwise(item_key).alias(KEY))


# --------------------------------------------------------------------------- purchase filter

def estimated_periods(data: TrainData, cfg: PurchaseFilterConfig) -> pl.DataFrame:
    """Per category of the bought items: ``category_id`` (text), ``intervals``, ``median_days``, ``period_days``.

    ``period_days`` is the clipped median repurchase interval when the category has
    at least ``min_intervals`` intervals, else ``default_period_days``.
    """
    categories = _side_column(data, S.CATEGORY)
    schema = {S.CATEGORY: pl.String, "intervals": pl.UInt32, "median_days": pl.Float64, "period_days": pl.Float64}
    if categories is None:
        return pl.DataFrame(schema=schema)
    buys = (data.events.filter((pl.col(S.BEHAVIOR) == "buy") & (pl.col(S.TS) <= data.now))
            .select(S.USER, S.ITEM, S.TS)
            .join(categories, on=S.ITEM)
            .filter(pl.col(S.CATEGORY).is_not_null())
            .sort(S.USER, S.CATEGORY, S.TS))
    gaps = (buys.with_columns(gap=pl.col(S.TS).diff().over(S.USER, S.CATEGORY))
            .filter(pl.col("gap") >= cfg.same_occasion_hours * 3600))
    stats = (buys.select(S.CATEGORY).unique()
             .join(gaps.group_by(S.CATEGORY).agg(intervals=pl.len(),
                                                 median_days=pl.col("gap").median() / DAY),
                   on=S.CATEGORY, how="left")
             .with_columns(pl.col("intervals").fill_null(0).cast(pl.UInt32)))
    enough = pl.col("intervals") >= cfg.min_intervals
    return (stats
            .with_columns(pl.when(enough)
                          .then(pl.col("median_days").clip(cfg.min_period_days, cfg.max_period_days))
                          .otherwise(pl.lit(cfg.default_period_days)).alias("period_days"))
            .select(list(schema))
            .sort(S.CATEGORY))


def purchase_blocks(data: TrainData, cfg: PurchaseFilterConfig) -> pl.DataFrame:
    """The (user, key) pairs blocked at ``data.now``: ``user_id, _block_key, last_buy, until, clicks``."""
    categories = _side_column(data, S.CATEGORY)
    if categories is None:
        log.warning("purchase filter: the items table has no 'category_id' column, so only the bought items "
                    "themselves are blocked; add category_id to items to block whole categories")
    events = _with_key(data.events.filter(pl.col(S.TS) <= data.now).select(S.USER, S.ITEM, S.BEHAVIOR, S.TS),
                       categories)
    last_buy = (events.filter(pl.col(S.BEHAVIOR) == "buy")
                .group_by(S.USER, KEY).agg(pl.col(S.CATEGORY).first(), pl.col(S.TS).max().alias("last_buy")))

    periods = pl.DataFrame(schema={S.CATEGORY: pl.String, "period_days": pl.Float64})
    if cfg.estimate:
        periods = estimated_periods(data, cfg).select(S.CATEGORY, "period_days")
    if cfg.periods_days:  # explicit periods override estimates
        explicit = pl.DataFrame({S.CATEGORY: list(cfg.periods_days), "period_days": list(cfg.periods_days.values())},
                                schema=periods.schema)
        periods = pl.concat([explicit, periods.join(explicit, on=S.CATEGORY, how="anti")])
    blocks = (last_buy.join(periods, on=S.CATEGORY, how="left")
              .with_columns(until=pl.col("last_buy") + pl.col("period_days").fill_null(cfg.default_period_days) * DAY)
              .filter(pl.col("until") > data.now))
    clicks = (events.filter(pl.col(S.BEHAVIOR).is_in(cfg.unblock_behaviors))
              .join(blocks.select(S.USER, KEY, "last_buy"), on=[S.USER, KEY])
              .filter(pl.col(S.TS) > pl.col("last_buy"))
              .group_by(S.USER, KEY).agg(clicks=pl.len()))
    blocks = (blocks.join(clicks, on=[S.USER, KEY], how="left")
              .with_columns(pl.col("clicks").fill_null(0)))
    if cfg.unblock_clicks > 0:
        blocks = blocks.filter(pl.col("clicks") < cfg.unblock_clicks)
    return blocks.select(S.USER, KEY, "last_buy", "until", "clicks").sort(S.USER, KEY)


def _purchase_filter(frame: pl.DataFrame, data: TrainData, cfg: PurchaseFilterConfig,
                     blocks: pl.DataFrame | None = None) -> pl.DataFrame:
    blocked = (purchase_blocks(data, cfg) if blocks is None else blocks).select(
        pl.col(S.USER).cast(frame.schema[S.USER]), KEY)
    # The few blocks are split back into their two kinds, so the many candidates are
    # matched on integer keys (user, category code) and (user, item), not on built strings.
    kind, rest = pl.col(KEY).str.head(1), pl.col(KEY).str.slice(1)
    by_item = (blocked.filter(kind == "i")
               .select(S.USER, rest.cast(frame.schema[S.ITEM], strict=False).alias(S.ITEM))
               .drop_nulls().unique().with_columns(_hit=pl.lit(True)))
    candidates = frame.select(S.USER, S.ITEM)
    hit = candidates.join(by_item, on=[S.USER, S.ITEM], how="left", maintain_order="left")["_hit"].is_not_null()
    codes = _value_codes(data, S.CATEGORY)
    if codes is not None:
        categories = _side_column(data, S.CATEGORY).with_columns(codes[S.CATEGORY].alias("_code")).drop_nulls()
        by_category = (blocked.filter(kind == "c").select(S.USER, rest.alias(S.CATEGORY))
                       .join(categories.select(S.CATEGORY, "_code").unique(), on=S.CATEGORY)
                       .select(S.USER, "_code").unique().with_columns(_hit=pl.lit(True)))
        keyed = candidates.join(codes.select(pl.col(S.ITEM).cast(frame.schema[S.ITEM]), pl.col(S.CATEGORY).alias("_code")),
                                on=S.ITEM, how="left", maintain_order="left")
        hit |= keyed.join(by_category, on=[S.USER, "_code"], how="left", maintain_order="left")["_hit"].is_not_null()
    return frame.filter(~hit)


# --------------------------------------------------------------------------- blacklist

def read_blacklist(path: Path, item_dtype: pl.DataType) -> tuple[pl.Series, pl.Series]:
    """The blacklisted item ids (cast to ``item_dtype``) and category ids (as text) of a file."""
    from recall.io import read_table

    path = Path(path)
    if not path.exists():
        raise RecallError(f"blacklist file '{path}' (filters.blacklist.path) does not exist; "
                          "create it or set filters.blacklist.enabled = false")
    table = read_table(path)
    columns = [c for c in (S.ITEM, S.CATEGORY) if c in table.columns]
    if not columns:
        raise RecallError(f"blacklist file '{path}' has neither an 'item_id' nor a 'category_id' column "
                          f"(found: {', '.join(table.columns) or 'none'}); name the column(s) so")
    items = pl.Series(S.ITEM, [], dtype=item_dtype)
    categories = pl.Series(S.CATEGORY, [], dtype=pl.String)
    if S.ITEM in table.columns:
        try:
            items = table[S.ITEM].drop_nulls().cast(item_dtype, strict=True).unique()
        except pl.exceptions.PolarsError:
            raise RecallError(f"column 'item_id' in blacklist file '{path}' has values that are not "
                              f"{item_dtype} item ids like the events'; fix those rows") from None
    if S.CATEGORY in table.columns:
        try:
            categories = table[S.CATEGORY].drop_nulls().cast(pl.String).unique()
        except pl.exceptions.PolarsError:
            raise RecallError(f"column 'category_id' in blacklist file '{path}' has dtype "
                              f"{table.schema[S.CATEGORY]}; use integers or strings") from None
    return items, categories


def _blacklist_filter(frame: pl.DataFrame, data: TrainData, cfg: BlacklistConfig) -> pl.DataFrame:
    items, categories = read_blacklist(cfg.path, frame.schema[S.ITEM])
    drop = pl.col(S.ITEM).is_in(items.implode())
    if categories.len():
        side = _side_column(data, S.CATEGORY)
        if side is None:
            raise RecallError(f"blacklist file '{cfg.path}' lists categories but the items table has no "
                              "'category_id' column, so they cannot be matched; add category_id to the "
                              "items table or list the items by item_id")
        in_category = (frame.select(S.ITEM).join(side, on=S.ITEM, how="left", maintain_order="left")
                       [S.CATEGORY].is_in(categories.implode()).fill_null(False))
        return frame.filter(~(drop.fill_null(False) | in_category))
    return frame.filter(~drop.fill_null(False))


# --------------------------------------------------------------------------- diversity

def _group_walk(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows in list order with group ids: the stable order by group, and each sorted row's group start."""
    n = groups.size
    row_bits = max(1, (n - 1).bit_length())
    if n and int(groups.max()) < 1 << (63 - row_bits) and int(groups.min()) >= 0:
        # (group, row) packed into one int64: a plain value sort is the stable order, and faster.
        order = np.sort((groups << row_bits) | np.arange(n)) & ((1 << row_bits) - 1)
    else:
        order = np.argsort(groups, kind="stable")  # stable: list order within each group
    sorted_groups = groups[order]
    starts = np.r_[True, sorted_groups[1:] != sorted_groups[:-1]] if groups.size else np.zeros(0, bool)
    first = np.maximum.accumulate(np.where(starts, np.arange(groups.size), 0))
    return order, first


def _value_codes(data: TrainData, column: str) -> pl.DataFrame | None:
    """``item_id, <column>`` with each distinct value (compared as text) as a code 1, 2, ...; null stays null."""
    side = _side_column(data, column)
    if side is None:
        return None
    return side.with_columns(pl.col(column).rank("dense").cast(pl.Int64))


def diversity_caps(cfg: DiversityConfig, side_of) -> list[tuple[str, int, object]]:
    """``(column, cap, side)`` of each set cap whose column the items table has (``side_of(column)``
    gives the engine's ``item_id, <column>`` table or None); a missing column is skipped with a warning."""
    caps = []
    for column, cap, name in ((S.CATEGORY, cfg.max_per_category, "max_per_category"),
                              (S.BRAND, cfg.max_per_brand, "max_per_brand")):
        if cap == 0:
            continue
        side = side_of(column)
        if side is None:
            log.warning("diversity filter: filters.diversity.%s is set but the items table has no '%s' "
                        "column; that cap is skipped (add the column to items to scatter by it)", name, column)
            continue
        caps.append((column, cap, side))
    return caps


def _diversity_filter(frame: pl.DataFrame, data: TrainData, cfg: DiversityConfig) -> pl.DataFrame:
    caps = diversity_caps(cfg, lambda column: _value_codes(data, column))
    if not caps:
        return frame
    # Integer codes joined on once, at the item level; no text column per candidate.
    work = frame.select(S.USER, S.ITEM, S.RANK).with_row_index("_row")
    for column, _, side in caps:
        work = work.join(side.with_columns(pl.col(S.ITEM).cast(work.schema[S.ITEM])), on=S.ITEM, how="left",
                         maintain_order="left")
    user_run = _list_runs(work)
    if user_run is None:
        work = work.sort(S.USER, S.RANK, S.ITEM)
        user_run = work[S.USER].rle_id().cast(pl.Int64).to_numpy()
    # Per cap: rows grouped by (user, value) once; each round is then a few O(rows) numpy passes.
    walks = []
    # Rows are sorted by user, so a user's rows are one run; (user run, value code) packs into
    # one integer group id (cheaper than ranking a struct of the two).
    for column, cap, _ in caps:
        values = work[column]
        code = values.fill_null(0).to_numpy()
        order, first = _group_walk(user_run * (int(code.max(initial=0)) + 1) + code)
        walks.append((values.is_null().to_numpy(), cap, order, first))
    kept = np.ones(work.height, dtype=bool)
    run_starts = np.flatnonzero(np.r_[True, user_run[1:] != user_run[:-1]]) if user_run.size else user_run
    longest = int(np.diff(np.r_[run_starts, user_run.size]).max(initial=0))
    for _ in range(longest + 1):
        decided = np.ones(work.height, dtype=bool)
        for uncapped, cap, order, first in walks:
            # Kept rows of the same (user, value) strictly above each row; unknown values are never capped.
            k = kept[order].astype(np.int64)
            above = np.cumsum(k) - k
            before = np.empty_like(above)
            before[order] = above - above[first]
            decided &= uncapped | (before < cap)
        if np.array_equal(decided, kept):
            break
        kept = decided
    keep = np.zeros(frame.height, dtype=bool)
    keep[work["_row"].to_numpy()] = kept
    return frame.with_columns(pl.Series(DEMOTED, ~keep))


# --------------------------------------------------------------------------- all together

def filter_with_refill(merge, data: TrainData, cfg: FiltersConfig, budget: int,
                       blocks: pl.DataFrame | None = None) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
    """:func:`apply_filters` on ``merge(budget + reserve, None)``, then the short lists refilled.

    ``merge(depth, users)`` gives the merged candidates of ``users`` (None: all) with
    at most ``depth`` rows per user (None: every candidate). Returns the filtered
    table, the first merge, and the rows each step removed, counted on each user's
    final input (the deeper merge for a refilled user).
    """
    depth = budget + cfg.reserve
    if blocks is None and cfg.purchase.enabled:
        blocks = purchase_blocks(data, cfg.purchase)  # once, for every pass below
    merged = merge(depth, None)
    filtered, removed = apply_filters(merged, data, cfg, budget, blocks)
    given = merged.group_by(S.USER).len().join(filtered.group_by(S.USER).len(), on=S.USER, how="left")
    short = given.filter((pl.col("len") >= depth) & (pl.col("len_right").fill_null(0) < budget)).select(S.USER)
    if short.height == 0:
        return filtered, merged, removed
    _, first = apply_filters(merged.join(short, on=S.USER, how="semi"), data, cfg, budget, blocks)
    refilled, again = apply_filters(merge(None, short[S.USER]), data, cfg, budget, blocks)
    log.debug("filters: %d short lists merged again to full depth", short.height)
    filtered = pl.concat([filtered.join(short, on=S.USER, how="anti"), refilled]).sort(S.USER, S.RANK)
    return filtered, merged, {k: removed[k] - first[k] + again[k] for k in removed}


def apply_filters(candidates: pl.DataFrame, data: TrainData, cfg: FiltersConfig,
                  budget: int, blocks: pl.DataFrame | None = None) -> tuple[pl.DataFrame, dict[str, int]]:
    """Run the enabled filters on merged candidates, keep ``budget`` per user, re-rank 1..n.

    Parameters
    ----------
    candidates
        The merge output ``user_id, item_id, score, rank, source, channels`` (any
        extra columns are carried along), ideally with ``budget + cfg.reserve`` rows
        per user so that filtered rows are replaced from the reserve.
    data
        The training data: events (purchases, clicks) up to ``data.now``, and the
        items table for ``category_id`` / ``brand_id``.
    cfg
        The filter settings.
    budget
        Candidates per user after filtering.
    blocks
        :func:`purchase_blocks` of ``data`` if already computed: the blocks depend on
        every user's purchases (estimated periods), so a run streaming users shard by
        shard computes them once and passes them to each shard.

    Returns
    -------
    The filtered table (same columns, ranks 1..n per user, at most ``budget`` rows
    per user, sorted by user and rank) and the rows each step removed:
    ``purchase``, ``blacklist``, ``diversity`` (over-cap rows demoted beyond the
    budget; 0 when disabled) and ``budget`` (the other rows beyond the budget); they
    add up to the input rows minus the output rows.
    """
    if budget < 1:
        raise RecallError(f"the candidate budget must be at least 1 (got {budget}); set candidates_per_user")
    missing = [c for c in (S.USER, S.ITEM, S.RANK) if c not in candidates.columns]
    if missing:
        raise RecallError(f"candidates table lacks column(s) {missing}; pass the merge output "
                          "(user_id, item_id, score, rank, source, channels)")
    rank_dtype = candidates.schema[S.RANK]
    frame = candidates
    removed = dict.fromkeys((*FILTERS, "budget"), 0)
    def purchase(frame, data, section):
        return _purchase_filter(frame, data, section, blocks)

    steps = ((cfg.purchase, purchase), (cfg.blacklist, _blacklist_filter),
             (cfg.diversity, _diversity_filter))
    for name, (section, run) in zip(FILTERS, steps):
        if section.enabled and frame.height:
            before = frame.height
            frame = run(frame, data, section)
            removed[name] = before - frame.height
    if DEMOTED not in frame.columns:
        frame = frame.with_columns(pl.lit(False).alias(DEMOTED))
    user_run = _list_runs(frame)
    if user_run is not None:
        # A merge's lists (users sorted, ranks rising): the demoted rows move behind the
        # others within each user by a stable sort of one small integer per row, and only
        # the rows within the budget are gathered.
        demoted = frame[DEMOTED].to_numpy()
        order, _ = _group_walk(user_run * 2 + demoted)
        rank = run_positions(user_run[order])
        within = rank <= budget
        removed["diversity"] = int(demoted[order[~within]].sum())
        removed["budget"] = int((~within).sum()) - removed["diversity"]
        return (frame.drop(DEMOTED)[order[within]]
                .with_columns(pl.Series(S.RANK, rank[within]).cast(rank_dtype))), removed
    frame = (frame
             .sort(S.USER, DEMOTED, S.RANK, S.ITEM)
             .with_columns(pl.int_range(1, pl.len() + 1).over(S.USER).cast(rank_dtype).alias(S.RANK)))
    beyond = frame.filter(pl.col(S.RANK) > budget)
    removed["diversity"] = int(beyond[DEMOTED].sum())
    removed["budget"] = beyond.height - removed["diversity"]
    return frame.filter(pl.col(S.RANK) <= budget).drop(DEMOTED), removed


def _list_runs(frame: pl.DataFrame) -> np.ndarray | None:
    """Each row's user run (0, 1, ... in row order, int64) if ``frame`` is sorted by user with strictly
    rising ranks within each user (a merge's output), else None.

    Such a frame is also sorted by (user, rank, item), so the sorts by those keys can be skipped.
    """
    if frame.height >= 2 and not frame[S.USER].is_sorted():
        return None
    user_run = frame[S.USER].rle_id().cast(pl.Int64).to_numpy()
    rank = frame[S.RANK].to_numpy()
    in_order = np.all((rank[1:] > rank[:-1]) | (user_run[1:] != user_run[:-1]))
    return user_run if in_order else None
