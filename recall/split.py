"""What was knowable at the split time T: the training data, the catalogue at T, the test targets.

Offline evaluation (``recall eval``) and validation (``recall tune``) train on what
a deployment would have had at T and score what users did after it. Two protocols:

- ``time`` (global time split): T is ``eval.split_ts`` or the last ``test_days`` of
  the log; the targets are the engagements in ``[T, T + test_days)``, of every user,
  users without history included (they are served the hot lists).
- ``user`` (per-user temporal holdout): T is the ``split_quantile`` of the event
  times; every user with at least ``min_history_items`` engaged items before T is
  evaluated on their first ``holdout_items`` new items after T, however late. Each
  user's held-out items are their next ones in time, as in a leave-last-out split, but
  nobody's training data reaches past T: a leave-last-out split that cut each user at
  their own last events would train the channels on other users' later events.

Nothing after T reaches the channels: not events, and not items first seen after T.
An items table lists the whole catalogue of the log's period, so an item whose first
event is after T would reach the channels as a "cold item with side information" and
be handed the answer (every such item is a test target). The catalogue at T keeps
the items with an event before T, and items whose ``listed_ts`` column (epoch seconds
or a datetime, optional) says they were listed before T. The users table is kept
whole: a deployment knows a logged-in user's attributes when it serves them.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from recall import schema as S
from recall.errors import RecallError
from recall.io import Dataset

LISTED = "listed_ts"
REPEAT = "repeat"
FIRST_TS = "first_ts"


@dataclass
class Split:
    """Training data at T, the events after T that hold the targets, T itself and the protocol."""

    train: Dataset
    test: pl.DataFrame
    ts: int
    protocol: str = "time"


def catalogue_at(items: pl.DataFrame | None, events_before: pl.DataFrame, split: int) -> pl.DataFrame | None:
    """The items-table rows knowable at ``split``: seen in an event before it, or listed before it."""
    if items is None:
        return None
    seen = pl.col(S.ITEM).is_in(events_before[S.ITEM].unique().implode())
    if LISTED not in items.columns:
        return items.filter(seen)
    listed = pl.col(LISTED)
    if items.schema[LISTED].is_temporal():
        listed = listed.dt.epoch("s")
    return items.filter(seen | (listed < split).fill_null(False))


def dataset_at(data: Dataset, split: int) -> Dataset:
    """The dataset a deployment had at ``split``: earlier events, the catalogue at T, all users."""
    train = data.events.filter(pl.col(S.TS) < split)
    return Dataset(train, catalogue_at(data.items, train, split), data.users, data.files)


def time_split(data: Dataset, test_days: float, split_ts: int | None = None) -> Split:
    """Train before T; test events in [T, T + test_days); T = ``split_ts`` or the last ``test_days``."""
    events = data.events
    horizon = int(test_days * 86400)
    split = split_ts if split_ts is not None else int(events[S.TS].max()) + 1 - horizon
    return _checked(Split(dataset_at(data, split),
                          events.filter((pl.col(S.TS) >= split) & (pl.col(S.TS) < split + horizon)), split),
                    "set eval.split_ts or eval.test_days to fall inside the log")


def user_split(data: Dataset, quantile: float) -> Split:
    """Train before the ``quantile`` of event times; every later event may hold a user's next items."""
    events = data.events
    split = int(events[S.TS].quantile(quantile, interpolation="lower"))
    if split <= int(events[S.TS].min()):
        split = int(events[S.TS].min()) + 1
    return _checked(Split(dataset_at(data, split), events.filter(pl.col(S.TS) >= split), split, "user"),
                    "set eval.split_quantile between 0.5 and 0.95")


def _checked(split: Split, fix: str) -> Split:
    if split.train.events.height == 0 or split.test.height == 0:
        part = "train" if split.train.events.height == 0 else "test"
        raise RecallError(f"the split at ts={split.ts} leaves an empty {part} set; {fix}")
    return split


def target_pairs(engaged_before: pl.DataFrame, test: pl.DataFrame, behaviors: list[str],
                 per_user: int | None = None) -> pl.DataFrame:
    """Every (user_id, item_id) engaged with after T, with ``repeat``: engaged before T too.

    ``per_user`` keeps each user's first that many new items and first that many
    repeat items, in the order of their first engagement after T (the user protocol).
    """
    pairs = (test.filter(pl.col(S.BEHAVIOR).is_in(behaviors))
             .group_by(S.USER, S.ITEM).agg(pl.col(S.TS).min().alias(FIRST_TS)))
    seen = engaged_before.select(S.USER, S.ITEM).unique().with_columns(pl.lit(True).alias(REPEAT))
    pairs = (pairs.join(seen, on=[S.USER, S.ITEM], how="left")
             .with_columns(pl.col(REPEAT).fill_null(False)))
    if per_user is not None:
        pairs = (pairs.sort(S.USER, REPEAT, FIRST_TS, S.ITEM)
                 .filter(pl.int_range(pl.len()).over(S.USER, REPEAT) < per_user))
    return pairs.select(S.USER, S.ITEM, REPEAT).sort(S.USER, S.ITEM)


def eligible_users(engaged_before: pl.DataFrame, min_items: int) -> pl.DataFrame:
    """Users with at least ``min_items`` distinct engaged items before T (the user protocol's users)."""
    return (engaged_before.group_by(S.USER).agg(pl.col(S.ITEM).n_unique().alias("n"))
            .filter(pl.col("n") >= min_items).select(S.USER))
