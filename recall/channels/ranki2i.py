"""RankI2I: the itemCF table re-weighted by the smoothed CTR of each recalled item (Tmall homepage).

For trigger i and target j:

    score(i, j) = sim(i, j) * ctr(i, j) ** gamma

- ``sim(i, j)`` is the itemCF similarity of :mod:`recall.channels.itemcf` (same kernel,
  same parameters: IUF, time decay, hot-item normalisation, same-category option) before
  truncation; the product is then truncated to ``top_k`` per trigger and, with
  ``normalize``, divided by the row maximum. Truncating after the product lets a
  high-CTR neighbour just below itemCF's cut enter the table. ``gamma = ctr_power`` is 1
  in the source; smaller values temper the CTR's pull (0 gives plain itemCF).
- ``ctr(i, j)``, counted over the last ``ctr_window_days``:

  * **item CTR** ``ctr_j = (c_j + a) / (n_j + a + b)``: ``n_j`` impression events and
    ``c_j`` click events of j (clipped to ``n_j``: a click with no logged impression
    cannot raise the rate above 1), with ``Beta(a, b)`` fitted to all items
    (:func:`recall.ctr.fit_beta_prior`, moments or ML);
  * **pair CTR** (``pair_ctr``, when the log has impressions): a target impression or
    click of j by user u at time t is *attributed* to every other item i that u engaged
    with (``behaviors``) in ``[t - attribution_hours, t)``, each once per target event
    (``attribution = "all"``), or only to the most recent such item (``"last"``; ties
    at one second: the smaller item). The pair counts ``n_ij``, ``c_ij`` (clicks clipped
    to impressions, as for items) are smoothed towards the target's item CTR with
    strength ``k = pair_prior_strength``: ``ctr(i, j) = (c_ij + k ctr_j) / (n_ij + k)``.
    Pairs never attributed use ``ctr_j``;
  * **proxy** when the window holds no impressions (e.g. MovieLens): the target's
    deep-action rate, ``c_j`` = users with a ``proxy_behaviors`` event (fav / cart / buy)
    on j and ``n_j`` = users who engaged with j at all, smoothed the same way. A warning
    says so. With no deep actions either, ``ctr = 1`` and the channel is plain itemCF.

The attribution is a windowed self-join of each user's events by binary search (only
true matches are materialised), over blocks of target events so memory is bounded.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import polars as pl
import scipy.sparse as sp
from pydantic import Field, field_validator

from recall import schema as S
from recall.interface import I2IChannel, Span
from recall.channels.itemcf import ItemCFParams, cooccurrence, required_categories, truncate_block
from recall.context import IIDX, UIDX, TrainData
from recall.ctr import BetaPrior, PriorMethod, fit_beta_prior, shrink
from recall.sparse import blocks, row_indices, row_normalise_max, top_k_per_row

log = logging.getLogger("recall")

TRIGGER = "trigger_idx"


class RankI2IParams(ItemCFParams):
    ctr_window_days: Span = Field(30.0, gt=0,
                                          description="CTR counted over the last N days (inf: all)")
    pair_ctr: bool = Field(True, description="per (trigger, target) CTR when the log has impressions")
    attribution_hours: float = Field(24.0, gt=0,
                                      description="a target event counts for triggers engaged at most this long before")
    attribution: Literal["all", "last"] = Field(
        "all", description="credit every trigger in the window, or only the most recent one")
    pair_prior_strength: float = Field(20.0, gt=0,
                                       description="pseudo-impressions pulling a pair CTR to its item CTR")
    ctr_power: float = Field(1.0, ge=0,
                             description="exponent on the CTR factor: 1 is the published product, 0 plain itemCF")
    prior_method: PriorMethod = Field("moments", description="Beta prior fit: 'moments' or 'ml' (Minka)")
    min_prior_items: int = Field(10, ge=1, description="fewer items with impressions give a weak prior")
    proxy_behaviors: list[str] = Field(default_factory=lambda: ["fav", "cart", "buy"],
                                       description="deep actions of the CTR proxy when there are no impressions")
    attribution_block: int = Field(1_000_000, ge=1,
                                   description="target events per block in the attribution join (memory bound)")

    @field_validator("proxy_behaviors")
    @classmethod
    def _known_proxy(cls, value: list[str]) -> list[str]:
        allowed = set(S.BEHAVIORS) - {"impression"}
        if not value or set(value) - allowed:
            raise ValueError(f"proxy_behaviors must be a non-empty subset of {', '.join(sorted(allowed))}")
        return value


def ctr_factor(ctr, power: float):
    """``ctr ** gamma``: the CTR's weight on the similarity (numpy arrays or Spark columns)."""
    return ctr if power == 1.0 else ctr ** power


def ctr_events(data: TrainData, p: RankI2IParams) -> pl.DataFrame:
    """Events inside the CTR window."""
    if p.ctr_window_days is None:
        return data.events
    return data.events.filter(pl.col(S.TS) >= data.now - p.ctr_window_days * 86400)


def item_counts(events: pl.DataFrame, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Click and impression events per item index, clicks clipped to impressions."""
    grouped = (events.filter(pl.col(S.BEHAVIOR).is_in(["impression", "click"]))
               .group_by(IIDX)
               .agg(clicks=(pl.col(S.BEHAVIOR) == "click").sum(),
                    impressions=(pl.col(S.BEHAVIOR) == "impression").sum()))
    index = grouped[IIDX].to_numpy()
    clicks = np.zeros(n_items)
    impressions = np.zeros(n_items)
    clicks[index] = grouped["clicks"].to_numpy()
    impressions[index] = grouped["impressions"].to_numpy()
    return np.minimum(clicks, impressions), impressions


def proxy_counts(events: pl.DataFrame, p: RankI2IParams, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Per item: users with a deep action (numerator) and users who engaged at all (denominator)."""
    engaged = p.proxy_behaviors + ["click"]
    grouped = (events.filter(pl.col(S.BEHAVIOR).is_in(engaged))
               .group_by(UIDX, IIDX)
               .agg(deep=pl.col(S.BEHAVIOR).is_in(p.proxy_behaviors).any())
               .group_by(IIDX)
               .agg(deep=pl.col("deep").sum(), engaged=pl.len()))
    index = grouped[IIDX].to_numpy()
    deep = np.zeros(n_items)
    users = np.zeros(n_items)
    deep[index] = grouped["deep"].to_numpy()
    users[index] = grouped["engaged"].to_numpy()
    return deep, users


def attributed_counts(data: TrainData, events: pl.DataFrame, p: RankI2IParams) -> pl.DataFrame:
    """``trigger_idx, item_idx, clicks, impressions``: target events credited to earlier engagements.

    A target impression / click of j at time t credits item i != j if the same user
    engaged with i (``behaviors``) in ``[t - attribution_hours, t)``; see the module docstring.

    A windowed join without the all-pairs blow-up: engagements are sorted by
    (user, time), so each target's matches are one contiguous run, found with two
    binary searches on the key ``user << 32 | rank(time)``; only real matches are
    materialised, ``attribution_block`` target events at a time.
    """
    horizon = int(round(p.attribution_hours * 3600))
    targets = events.filter(pl.col(S.BEHAVIOR).is_in(["impression", "click"]))
    empty = pl.DataFrame(schema={TRIGGER: pl.Int32, IIDX: pl.Int32, "clicks": pl.Float64,
                                 "impressions": pl.Float64})
    if targets.height == 0:
        return empty
    engagements = (data.events
                   .filter(pl.col(S.BEHAVIOR).is_in(p.behaviors),
                           pl.col(S.TS) >= int(targets[S.TS].min()) - horizon)
                   .select(UIDX, IIDX, S.TS)
                   .unique()
                   .sort(UIDX, S.TS, IIDX))
    if engagements.height == 0:
        return empty
    eng_ts = engagements[S.TS].to_numpy()
    eng_item = engagements[IIDX].to_numpy()
    times = np.unique(eng_ts)  # ranks of engagement times fit in 32 bits, epoch seconds do not

    def keys(users: np.ndarray, ranks: np.ndarray) -> np.ndarray:
        return (users.astype(np.int64) << 32) | ranks.astype(np.int64)

    eng_key = keys(engagements[UIDX].to_numpy(), np.searchsorted(times, eng_ts))
    user = targets[UIDX].to_numpy()
    item = targets[IIDX].to_numpy()
    ts = targets[S.TS].to_numpy()
    is_click = (targets[S.BEHAVIOR] == "click").to_numpy()
    # Running sums per (trigger, item) as a sparse matrix of int64 codes: clicks in the high
    # 32 bits, impressions in the low 32, so one matrix carries both and every attributed pair
    # is a non-zero. Adding one block's matrix costs memory in the distinct pairs, not in the
    # blocks' repeats of them.
    n_items = data.n_items
    counts = sp.csr_matrix((n_items, n_items), dtype=np.int64)
    for lo, hi in blocks(targets.height, p.attribution_block):
        u, t = user[lo:hi], ts[lo:hi]
        first = np.searchsorted(eng_key, keys(u, np.searchsorted(times, t - horizon, "left")), "left")
        stop = np.searchsorted(eng_key, keys(u, np.searchsorted(times, t, "left")), "left")
        runs = stop - first
        event = np.repeat(np.arange(lo, hi), runs)
        match = np.repeat(first, runs) + np.arange(runs.sum()) - np.repeat(np.cumsum(runs) - runs, runs)
        joined = pl.DataFrame({"event": event, TRIGGER: eng_item[match], "trigger_ts": eng_ts[match],
                               IIDX: item[event], "is_click": is_click[event]})
        joined = joined.filter(pl.col(TRIGGER) != pl.col(IIDX))
        if p.attribution == "last":
            # Most recent engagement; ties at the same second go to the smaller item.
            joined = (joined.sort("event", "trigger_ts", TRIGGER, descending=[False, True, False])
                      .unique("event", keep="first"))
        else:
            joined = joined.unique(["event", TRIGGER])
        code = np.where(joined["is_click"].to_numpy(), np.int64(1) << 32, np.int64(1))
        block = sp.csr_matrix((code, (joined[TRIGGER].to_numpy(), joined[IIDX].to_numpy())),
                              shape=(n_items, n_items))
        block.sum_duplicates()
        counts = counts + block
    if not counts.nnz:
        return empty
    counts.sort_indices()
    clicks, impressions = (counts.data >> 32).astype(np.float64), (counts.data & 0xFFFFFFFF).astype(np.float64)
    return pl.DataFrame({TRIGGER: row_indices(counts).astype(np.int32), IIDX: counts.indices.astype(np.int32),
                         "clicks": np.minimum(clicks, impressions), "impressions": impressions})


class RankI2I(I2IChannel):
    """itemCF x smoothed CTR of the recalled item (per trigger when the log allows).

    Learned: ``prior_`` (the item-level Beta prior, None without a CTR signal),
    ``ctr_source_`` (``"pair"``, ``"item"``, ``"proxy"`` or ``"none"``), ``item_ctr_``
    (per item index), ``pair_ctr_`` (``trigger_idx, item_idx, clicks, impressions, ctr``).
    """

    name = "ranki2i"
    description = "itemCF similarity x smoothed (trigger, target) CTR, Beta prior fitted to all items"
    Params = RankI2IParams

    def item_similarity(self, data: TrainData) -> sp.csr_matrix:
        p = self.params
        categories = required_categories(data, self.name) if p.same_category else None
        self._fit_ctr(data)
        # Keep every neighbour through itemCF's finish step: the CTR may re-order them,
        # so the top_k cut comes after the product (still one block at a time).
        untruncated = truncate_block(p.model_copy(update={"top_k": max(1, data.n_items)}), categories)
        pair_keys = (self.pair_ctr_[TRIGGER].cast(pl.Int64).to_numpy() * data.n_items
                     + self.pair_ctr_[IIDX].cast(pl.Int64).to_numpy())
        pair_values = self.pair_ctr_["ctr"].to_numpy()
        item_ctr = self.item_ctr_

        def finish(start: int, block: sp.csr_matrix) -> sp.csr_matrix:
            block = untruncated(start, block)
            rows, cols = row_indices(block) + start, block.indices
            factor = item_ctr[cols]
            if pair_keys.size:
                keys = rows * data.n_items + cols
                at = np.minimum(np.searchsorted(pair_keys, keys), pair_keys.size - 1)
                hit = pair_keys[at] == keys
                factor = np.where(hit, pair_values[at], factor)
            factor = ctr_factor(factor, p.ctr_power)
            weighted = sp.csr_matrix((block.data * factor, block.indices, block.indptr), shape=block.shape)
            return top_k_per_row(weighted, p.top_k)

        similarity = cooccurrence(data, p, finish)
        return row_normalise_max(similarity) if p.normalize else similarity

    def _fit_ctr(self, data: TrainData) -> None:
        """Set ``ctr_source_``, ``prior_``, ``item_ctr_`` and ``pair_ctr_`` (see the module docstring)."""
        p = self.params
        events = ctr_events(data, p)
        self.pair_ctr_ = pl.DataFrame(schema={TRIGGER: pl.Int32, IIDX: pl.Int32, "clicks": pl.Float64,
                                              "impressions": pl.Float64, "ctr": pl.Float64})
        self.prior_: BetaPrior | None = None
        has_impressions = bool((events[S.BEHAVIOR] == "impression").any())
        if has_impressions:
            clicks, shown = item_counts(events, data.n_items)
            self.ctr_source_ = "pair" if p.pair_ctr else "item"
        else:
            clicks, shown = proxy_counts(events, p, data.n_items)
            if clicks.sum() == 0:
                log.warning("%s: no impressions and no %s events in the CTR window; the CTR factor is 1 "
                            "and the table is plain itemCF", self.name, "/".join(p.proxy_behaviors))
                self.ctr_source_ = "none"
                self.item_ctr_ = np.ones(data.n_items)
                return
            log.warning("%s: no impression events in the CTR window, so no CTR; using the deep-action "
                        "rate (%s per engaged user) of the target item as a proxy",
                        self.name, "/".join(p.proxy_behaviors))
            self.ctr_source_ = "proxy"
        self.prior_ = fit_beta_prior(clicks, shown, method=p.prior_method, min_items=p.min_prior_items)
        self.item_ctr_ = self.prior_.smooth(clicks, shown)
        if self.ctr_source_ == "pair":
            pairs = attributed_counts(data, events, p)
            ctr = shrink(pairs["clicks"].to_numpy(), pairs["impressions"].to_numpy(),
                         self.item_ctr_[pairs[IIDX].to_numpy()], p.pair_prior_strength)
            self.pair_ctr_ = pairs.with_columns(ctr=pl.Series(ctr, dtype=pl.Float64))

    def ctr_table(self, data: TrainData) -> pl.DataFrame:
        """The attributed pairs: ``item_id, neighbor_id, clicks, impressions, ctr`` (after ``fit``)."""
        pairs = self.pair_ctr_
        return pl.DataFrame({
            S.ITEM: data.item_ids.gather(pairs[TRIGGER].to_numpy()),
            S.NEIGHBOR: data.item_ids.gather(pairs[IIDX].to_numpy()),
            "clicks": pairs["clicks"], "impressions": pairs["impressions"], "ctr": pairs["ctr"],
        })


__all__ = ["RankI2I", "RankI2IParams", "attributed_counts", "item_counts", "proxy_counts"]
