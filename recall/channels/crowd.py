"""Crowd-based filtering: hot lists per crowd of coarse user attributes (Tmall homepage, backup recall).

Users are split into crowds by the attribute columns ``attributes`` of the users table
(default gender, age band, city; those absent from the table are skipped). Dropping
attributes from the right gives a hierarchy of coarser crowds, e.g.
gender x age x city -> gender x age -> gender -> global. A user with a missing value
belongs to the crowds of the attributes before it only.

Per crowd g and item j, over the events of g's users in the last ``window_days``:

- with impressions in the window, the **smoothed CTR**: ``c_gj`` click and ``n_gj``
  impression events (clicks clipped to impressions). The global level uses a Beta prior
  fitted to all items, ``ctr_j = (c_j + a) / (n_j + a + b)`` (:mod:`recall.ctr`); each finer
  crowd is smoothed towards its parent crowd's rate for the same item with strength
  ``k = prior_strength``: ``ctr_gj = (c_gj + k ctr_parent(g),j) / (n_gj + k)``, so a small
  crowd's list leans on its parent's instead of on a few lucky clicks;
- without impressions (or with ``rank_by = "volume"``), the **engagement share**
  ``e_gj / sum_j e_gj``: ``e_gj`` counts g's distinct users who engaged with j (click or
  deeper), each weighted by the recency decay ``0.5 ** (age / half_life_days)`` of
  their latest engagement with it. Distinct users, not events: a user who clicks one
  item twenty times is one vote. The decay blends all-time popularity (a long
  half-life) with what is hot now (a short one).

A window too short to hold ``min_support`` engagements over all users is widened
(doubled, up to all history): a sparse log still gets a hot list deep enough to
fill every user's budget.

A crowd's list is its top ``top_k`` items by that score among the items its users
clicked. A crowd has *support* when its window holds at least ``min_support`` clicks by
at least ``min_users`` distinct users; the global crowd is always served, whatever its support.

Every known user (events or users table) gets the list of the finest supported crowd
they belong to (users without attributes: the global list), minus items they already
engaged with, back-filled from the next coarser supported lists (finer list first,
each in its own order) so that they still get ``n`` when the lists allow. Scores are
the list scores made non-increasing along each user's list by a running minimum (a
back-filled item never outscores the finer crowd's items).

The per-user step is a join of users with their crowd's merged list, run over blocks
of ``user_block`` users. Events carry integer crowd ids, not key strings.

Published (``extra_tables``): ``hot/crowds.parquet`` (``crowd, item_id, score, rank``,
every supported crowd) and ``hot/<crowd>.parquet`` per crowd, e.g.
``hot/gender=F,age_band=25-34.parquet``; with more than ``max_crowd_files`` crowds only
``hot/global.parquet`` besides the combined table. Logged-out users get the global list
(:meth:`Crowd.global_list`), users known only by attributes :meth:`Crowd.list_for`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import ClassVar, Literal

import numpy as np
import polars as pl
from pydantic import Field, field_validator

from recall import schema as S
from recall.interface import Channel, ChannelParams, Span, empty_candidates
from recall.context import ENGAGED, IIDX, UIDX, TrainData
from recall.ctr import PriorMethod, fit_beta_prior, shrink
from recall.decay import DAY, halving
from recall.errors import RecallError
from recall.sparse import chunk_rows, row_blocks

log = logging.getLogger("recall")

GLOBAL = "global"
CROWD = "crowd"
CROWD_ID = "crowd_id"
LEVEL = "level"
FINEST = "finest"


class CrowdParams(ChannelParams):
    attributes: list[str] = Field(default_factory=lambda: ["gender", "age_band", "city"],
                                  description="users-table columns defining crowds, coarse to fine "
                                              "(missing ones skipped; [] = global list only)")
    window_days: Span = Field(None, gt=0, description="hot lists from the last N days (inf: all); "
                                                      "widened while the whole window has < min_support")
    half_life_days: Span = Field(14.0, gt=0, description="volume mode: recency decay of each user's vote "
                                                         "(inf: all-time popularity)")
    top_k: int = Field(1000, ge=1, description="items per crowd list (enough to fill budget + reserve)")
    rank_by: Literal["auto", "ctr", "volume"] = Field(
        "auto", description="smoothed CTR or click share; auto: CTR when the window has impressions")
    min_support: int = Field(50, ge=0, description="clicks a crowd needs in the window to get its own list")
    min_users: int = Field(10, ge=0, description="distinct clicking users a crowd needs for its own list")
    prior_strength: float = Field(50.0, gt=0,
                                  description="pseudo-impressions pulling a crowd's CTR to its parent crowd's")
    prior_method: PriorMethod = Field("moments", description="global Beta prior fit: 'moments' or 'ml' (Minka)")
    min_prior_items: int = Field(10, ge=1, description="fewer items with impressions give a weak prior")
    max_crowd_files: int = Field(20, ge=0, description="more crowds than this: publish only the global "
                                                      "and the combined table, not one file per crowd")

    @field_validator("attributes")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("attributes must not repeat a column")
        if S.USER in value:
            raise ValueError(f"'{S.USER}' is the key, not an attribute")
        return value


def crowd_key(attributes: list[str]) -> pl.Expr:
    """``attr=value,...`` over the given attributes; null if any value is null; ``global`` for none."""
    if not attributes:
        return pl.lit(GLOBAL)
    return pl.concat_str([pl.lit(f"{a}=") + pl.col(a).cast(pl.String) for a in attributes], separator=",")


def widened_window(days: float | None, now: int, first_ts: int, min_support: int,
                   count_since: Callable[[float], int]) -> float | None:
    """The hot lists' window: ``days`` doubled while it holds fewer than ``min_support`` engagements.

    ``count_since(t)`` counts the engagements at or after ``t`` (each engine counts its
    own way). None means all history: no window, or one reaching past the first event.
    """
    if days is None:
        return None
    while now - days * DAY > first_ts and count_since(now - days * DAY) < min_support:
        days *= 2
    return None if now - days * DAY <= first_ts else days


def usable_attributes(wanted: list[str], columns: list[str] | None, name: str) -> list[str]:
    """The configured attributes the users table has (``columns``; None: no users table), in order.

    No users table is harmless (the global hot list only, with a warning); a table with
    none of the attributes is a RecallError naming its columns. Both engines call this.
    """
    if not wanted:
        return []
    if columns is None:
        # Harmless: the channel still does its job as the global hot list.
        log.warning("%s: no users table, so no crowds from %s; serving the global hot list "
                    "(add users.parquet to the data folder, or set channels.%s.attributes = [])",
                    name, ", ".join(wanted), name)
        return []
    usable = [a for a in wanted if a in columns]
    if not usable:
        others = [c for c in columns if c != S.USER]
        raise RecallError(
            f"the users table has none of channels.{name}.attributes ({', '.join(wanted)}); "
            f"its columns are {', '.join(others) or 'none besides user_id'}: list some of them, "
            f"or set attributes = [] for the global hot list only")
    missing = [a for a in wanted if a not in usable]
    if missing:
        log.info("%s: users table has no column(s) %s; crowds use %s", name, ", ".join(missing), ", ".join(usable))
    return usable


def file_name(key: str) -> str:
    """A crowd key made safe as one path component (values may hold slashes)."""
    return re.sub(r"[/\\\x00]", "_", key)


class Crowd(Channel):
    """Hot lists per demographic crowd, with coarser crowds as fallback and back-fill.

    Learned: ``attributes_`` (the columns used), ``mode_`` (``"ctr"`` or ``"volume"``),
    ``prior_`` (global Beta prior, CTR mode), ``crowds_`` (``crowd_id, crowd, level, clicks,
    users, supported`` of every crowd with clicks), ``lists_`` (``crowd_id, crowd, level,
    item_idx, item_id, score, rank`` of the supported crowds), ``chains_`` (per finest crowd
    id, the merged back-fill list), ``user_crowd_`` (``user_idx, finest`` crowd id).
    """

    name = "crowd"
    description = "hot lists per crowd (gender x age x city ...), coarser crowds as fallback"
    Params = CrowdParams
    exclude_interacted: ClassVar[bool] = True  # items the user engaged with are never recommended

    # ------------------------------------------------------------------ fit
    def fit(self, data: TrainData) -> "Crowd":
        p = self.params
        self.attributes_ = self._usable_attributes(data)
        levels = range(len(self.attributes_) + 1)
        ids = [f"_crowd{level}" for level in levels]
        users, names = self._crowd_ids(data, ids)
        self.window_days_ = self._window(data)
        events = data.events
        if self.window_days_ is not None:
            events = events.filter(pl.col(S.TS) >= data.now - self.window_days_ * 86400)
        window = "all" if self.window_days_ is None else f"the last {self.window_days_:g}"
        has_impressions = bool((events[S.BEHAVIOR] == "impression").any())
        if p.rank_by == "ctr" and not has_impressions:
            raise RecallError(f"channels.{self.name}.rank_by = 'ctr' needs impression events in {window} days "
                              "and there are none; use rank_by = 'auto' or 'volume'")
        self.mode_ = p.rank_by if p.rank_by != "auto" else ("ctr" if has_impressions else "volume")
        if self.mode_ == "volume" and p.rank_by == "auto":
            log.info("%s: no impressions in %s days; crowd lists rank by engaged users", self.name, window)
        # Events carry small integer crowd ids, never the key strings (one per event and level).
        events = self._votes(events, data.now).join(users.select(UIDX, *ids), on=UIDX, how="left")
        if not bool(events["is_click"].any()):
            log.warning("%s: no clicks in %s days, so every hot list is empty; widen channels.%s.window_days",
                        self.name, window, self.name)

        support, cells = [], []
        self.prior_ = None
        parent = None
        for level in levels:
            crowd = ids[level]
            scoped = events.filter(pl.col(crowd).is_not_null())
            support.append(scoped.filter("is_click").group_by(crowd)
                           .agg(clicks=pl.len(), users=pl.col(UIDX).n_unique())
                           .rename({crowd: CROWD_ID}))
            # The parent crowd's id rides along (it is a function of this crowd).
            group = [crowd, ids[level - 1]] if level else [crowd]
            counts = (scoped.group_by(*group, IIDX)
                      .agg(clicks=pl.col("is_click").sum().cast(pl.Float64),
                           impressions=(~pl.col("is_click")).sum().cast(pl.Float64),
                           votes=pl.col("vote").sum())
                      .rename({crowd: CROWD_ID, **({ids[level - 1]: "parent"} if level else {})})
                      .sort(CROWD_ID, IIDX))
            counts = self._score(counts, parent, level)
            parent = counts.select(pl.col(CROWD_ID).alias("parent"), IIDX, pl.col("score").alias("parent_score"))
            cells.append(counts.select(CROWD_ID, IIDX, "clicks", "score"))

        self.crowds_ = (pl.concat(support)
                        .join(names, on=CROWD_ID)
                        .with_columns(supported=((pl.col("clicks") >= p.min_support)
                                                 & (pl.col("users") >= p.min_users))
                                      | (pl.col(LEVEL) == 0))
                        .select(CROWD_ID, CROWD, LEVEL, "clicks", "users", "supported")
                        .sort(LEVEL, CROWD))
        lists = (pl.concat(cells)
                 .filter(pl.col("clicks") > 0)
                 .join(self.crowds_.filter("supported").select(CROWD_ID, CROWD, LEVEL), on=CROWD_ID)
                 .sort(CROWD_ID, "score", IIDX, descending=[False, True, False])
                 .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int32).over(CROWD_ID).alias(S.RANK))
                 .filter(pl.col(S.RANK) <= p.top_k))
        self.lists_ = lists.select(CROWD_ID, CROWD, LEVEL, IIDX,
                                   pl.Series(S.ITEM, data.item_ids.gather(lists[IIDX].to_numpy())),
                                   "score", S.RANK)
        self._assign_users(users, ids)
        return self

    def _window(self, data: TrainData) -> float | None:
        """``window_days``, doubled while the whole window holds fewer than ``min_support`` engagements."""
        ts = data.engaged()[S.TS].sort().to_numpy()
        days = widened_window(self.params.window_days, data.now, int(ts[0]) if ts.size else data.now,
                              self.params.min_support, lambda since: ts.size - int(np.searchsorted(ts, since)))
        if days != self.params.window_days:
            log.info("%s: the last %s days hold fewer than %d engagements; hot lists use %s", self.name,
                     self.params.window_days, self.params.min_support,
                     "all history" if days is None else f"{days:g} days")
        return days

    def _votes(self, events: pl.DataFrame, now: int) -> pl.DataFrame:
        """``user_idx, item_idx, is_click, vote``: the rows the crowd scores count.

        CTR mode: impression and click events (``vote`` unused). Volume mode: one row
        per engaged (user, item), ``is_click`` true, ``vote`` its latest engagement's decay.
        """
        if self.mode_ == "ctr":
            return (events.filter(pl.col(S.BEHAVIOR).is_in(["impression", "click"]))
                    .select(UIDX, IIDX, is_click=pl.col(S.BEHAVIOR) == "click", vote=pl.lit(0.0)))
        half_life = self.params.half_life_days
        latest = (events.filter(pl.col(S.BEHAVIOR).is_in(ENGAGED))
                  .group_by(UIDX, IIDX).agg(pl.col(S.TS).max()))
        vote = halving(now - pl.col(S.TS), None if half_life is None else half_life * DAY)
        return latest.sort(UIDX, IIDX).select(UIDX, IIDX, is_click=pl.lit(True), vote=pl.lit(1.0) * vote)

    def _crowd_ids(self, data: TrainData, ids: list[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Per user and level the crowd id (null: a missing attribute), and ``crowd_id, crowd, level``."""
        users = self._user_attributes(data)
        names = []
        for level, column in enumerate(ids):
            key = crowd_key(self.attributes_[:level])
            users = users.with_columns(key.alias(column))
            level_names = (users.select(pl.col(column).alias(CROWD)).drop_nulls().unique().sort(CROWD)
                           .with_columns(pl.lit(level, dtype=pl.Int32).alias(LEVEL)))
            names.append(level_names)
        names = pl.concat(names).with_row_index(CROWD_ID).with_columns(pl.col(CROWD_ID).cast(pl.Int32))
        for level, column in enumerate(ids):
            lookup = names.filter(pl.col(LEVEL) == level).select(pl.col(CROWD).alias(column), CROWD_ID)
            users = (users.join(lookup, on=column, how="left", maintain_order="left")
                     .drop(column).rename({CROWD_ID: column}))
        return users.select(UIDX, *ids), names

    def _usable_attributes(self, data: TrainData) -> list[str]:
        return usable_attributes(self.params.attributes, None if data.users is None else data.users.columns,
                                 self.name)

    def _user_attributes(self, data: TrainData) -> pl.DataFrame:
        """Every known user index with its attribute values (null where unknown)."""
        frame = pl.DataFrame({S.USER: data.user_ids,
                              UIDX: np.arange(data.n_users, dtype=np.int32)})
        if not self.attributes_:
            return frame
        attrs = data.users.select(S.USER, *[pl.col(a).cast(pl.String) for a in self.attributes_])
        return frame.join(attrs, on=S.USER, how="left", maintain_order="left")

    def _score(self, counts: pl.DataFrame, parent: pl.DataFrame | None, level: int) -> pl.DataFrame:
        """Add ``score`` to one level's (crowd, item) counts: smoothed CTR or click share."""
        p = self.params
        if self.mode_ == "volume":
            return counts.with_columns(score=pl.col("votes") / pl.col("votes").sum().over(CROWD_ID))
        clicks = np.minimum(counts["clicks"].to_numpy(), counts["impressions"].to_numpy())
        shown = counts["impressions"].to_numpy()
        if level == 0:
            self.prior_ = fit_beta_prior(clicks, shown, method=p.prior_method, min_items=p.min_prior_items)
            score = self.prior_.smooth(clicks, shown)
        else:
            # Every (crowd, item) cell has its parent cell: the parent crowd holds these events too.
            parent_score = counts.join(parent, on=["parent", IIDX], how="left",
                                       maintain_order="left")["parent_score"].to_numpy()
            score = shrink(clicks, shown, parent_score, p.prior_strength)
        return counts.with_columns(score=pl.Series(score, dtype=pl.Float64))

    def _assign_users(self, users: pl.DataFrame, ids: list[str]) -> None:
        """Each user's finest supported crowd, and per such crowd the merged back-fill list."""
        supported = self.crowds_.filter("supported")[CROWD_ID].implode()
        finest = pl.col(ids[0])  # everybody is in the global crowd
        for column in ids[1:]:  # coarse to fine: the deepest supported crowd wins
            finest = pl.when(pl.col(column).is_in(supported)).then(pl.col(column)).otherwise(finest)
        users = users.with_columns(finest.alias(FINEST))
        self.user_crowd_ = users.select(UIDX, FINEST)
        # A finest crowd's back-fill chain is its users' crowds at every level: those below it
        # are its ancestors, all supported (a parent holds every event of its children);
        # those deeper are unsupported, have no list and drop out in the join with lists_.
        heads = users.unique(FINEST)
        ancestry = pl.concat([heads.select(FINEST, pl.col(column).alias(CROWD_ID)) for column in ids])
        self.chains_ = (ancestry.unique()
                        .join(self.lists_.select(CROWD_ID, LEVEL, IIDX, "score", S.RANK), on=CROWD_ID)
                        .sort(FINEST, LEVEL, S.RANK, descending=[False, True, False])
                        .unique([FINEST, IIDX], keep="first", maintain_order=True)
                        .with_columns(pl.int_range(pl.len(), dtype=pl.Int32).over(FINEST).alias("pos"))
                        .select(FINEST, IIDX, "score", "pos"))

    # ------------------------------------------------------------ recommend
    def recommend(self, data: TrainData, n: int, users: np.ndarray | None = None) -> pl.DataFrame:
        p = self.params
        engaged = data.interactions  # built once per TrainData: shards do not rescan the events
        frames = []
        for chunk in row_blocks(users, data.n_users, p.user_block):
            in_block = (pl.col(UIDX).is_between(chunk.start, chunk.stop - 1) if isinstance(chunk, slice)
                        else pl.col(UIDX).is_in(pl.Series(chunk).cast(pl.Int32).implode()))
            rows = engaged[chunk]
            seen = pl.DataFrame({UIDX: np.repeat(chunk_rows(chunk), np.diff(rows.indptr)).astype(np.int32),
                                 IIDX: rows.indices.astype(np.int32)})
            # A user's n-th unseen item is at chain position < n + (items they saw): the rest
            # of the chain (top_k per level, thousands of rows) is never joined to the users.
            reach = n + int(np.diff(rows.indptr).max(initial=0))
            recs = (self.user_crowd_.filter(in_block)
                    .join(self.chains_.filter(pl.col("pos") < reach), on=FINEST)
                    .join(seen, on=[UIDX, IIDX], how="anti")
                    .sort(UIDX, "pos")
                    .filter(pl.int_range(pl.len()).over(UIDX) < n)
                    .with_columns(pl.col("score").cum_min().over(UIDX),
                                  pl.int_range(1, pl.len() + 1, dtype=pl.Int32).over(UIDX).alias(S.RANK)))
            frames.append(pl.DataFrame({
                S.USER: data.user_ids.gather(recs[UIDX].to_numpy()),
                S.ITEM: data.item_ids.gather(recs[IIDX].to_numpy()),
                S.SCORE: recs["score"].cast(pl.Float64),
                S.RANK: recs[S.RANK],
            }))
        return pl.concat(frames) if frames else empty_candidates(data)

    # -------------------------------------------------------------- serving
    def crowd_list(self, crowd: str, n: int | None = None) -> pl.DataFrame:
        """One supported crowd's hot list ``item_id, score, rank`` (empty for an unknown key)."""
        table = self.lists_.filter(pl.col(CROWD) == crowd).sort(S.RANK)
        if n is not None:
            table = table.head(n)
        return table.select(S.ITEM, "score", S.RANK)

    def user_crowds(self, data: TrainData) -> pl.DataFrame:
        """``user_id, crowd``: the finest supported crowd of every known user."""
        names = self.crowds_.select(pl.col(CROWD_ID).alias(FINEST), CROWD)
        table = self.user_crowd_.join(names, on=FINEST, how="left", maintain_order="left")
        return pl.DataFrame({S.USER: data.user_ids.gather(table[UIDX].to_numpy()), CROWD: table[CROWD]})

    def global_list(self, n: int | None = None) -> pl.DataFrame:
        """The hot list for logged-out users: ``item_id, score, rank``."""
        return self.crowd_list(GLOBAL, n)

    def list_for(self, attributes: Mapping[str, object] | None, n: int | None = None) -> pl.DataFrame:
        """The hot list of the finest supported crowd matching ``attributes`` (global if none)."""
        attributes = attributes or {}
        supported = set(self.crowds_.filter("supported")[CROWD].to_list())
        best = GLOBAL
        for level in range(1, len(self.attributes_) + 1):
            values = [attributes.get(a) for a in self.attributes_[:level]]
            if any(v is None for v in values):
                break
            key = ",".join(f"{a}={v}" for a, v in zip(self.attributes_, values))
            if key in supported:
                best = key
        return self.crowd_list(best, n)

    def extra_tables(self, data: TrainData) -> dict[str, pl.DataFrame]:
        """``hot/<crowd>.parquet`` per supported crowd plus ``hot/crowds.parquet`` with all of them.

        With more than ``max_crowd_files`` crowds (e.g. many cities) only the global
        file and the combined table are written.
        """
        combined = self.lists_.sort(LEVEL, CROWD, S.RANK).select(CROWD, S.ITEM, "score", S.RANK)
        keys = combined[CROWD].unique(maintain_order=True).to_list()
        if len(keys) > self.params.max_crowd_files:
            log.info("%s: %d crowds; writing hot/%s.parquet and hot/crowds.parquet only",
                     self.name, len(keys), GLOBAL)
            keys = [GLOBAL]
        tables = {f"hot/{file_name(key)}.parquet": self.crowd_list(key) for key in keys}
        tables["hot/crowds.parquet"] = combined
        return tables


def logged_out_list(channel: Crowd, n: int | None = None) -> pl.DataFrame:
    """Serve a logged-out user: the fitted channel's global hot list."""
    return channel.global_list(n)


__all__ = ["Crowd", "CrowdParams", "crowd_key", "logged_out_list"]
