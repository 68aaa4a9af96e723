"""The split sees only what was knowable at T: planted future-only items are never recalled."""

from __future__ import annotations

import polars as pl
import pytest

from recall import schema as S
from recall.channels import CHANNELS
from recall.config import EvalConfig
from recall.context import TrainData
from recall.evaluation import evaluation_targets, split_data
from recall.io import Dataset
from recall.split import LISTED, catalogue_at, dataset_at, target_pairs, user_split
from tests.conftest import random_log

FUTURE = 10_000  # item ids of the planted future-only items


def planted(seed: int = 0) -> tuple[Dataset, int]:
    """A log whose items table also lists items first engaged with after T, twins of the hottest item."""
    events = random_log(seed, n_events=600, n_users=30, n_items=20, days=10)
    split = int(events[S.TS].max()) + 1 - 2 * 86400
    hot = (events.filter(pl.col(S.TS) < split).group_by(S.ITEM).len().sort("len", descending=True)[S.ITEM][0])
    items = pl.DataFrame({S.ITEM: list(range(20)), "category_id": [i % 3 for i in range(20)],
                          "brand_id": [i % 4 for i in range(20)]})
    twins = pl.DataFrame({S.ITEM: [FUTURE + k for k in range(5)], "category_id": [hot % 3] * 5,
                          "brand_id": [hot % 4] * 5})
    # Every test user engages with the future items after T: the answer a leak would hand over.
    users = events[S.USER].unique().sort()
    future = pl.DataFrame({S.USER: users.to_list() * 5,
                           S.ITEM: [FUTURE + k for k in range(5) for _ in range(users.len())],
                           S.BEHAVIOR: ["click"] * (5 * users.len()),
                           S.TS: [split + 3600] * (5 * users.len())}).cast(events.schema)
    people = pl.DataFrame({S.USER: users, "gender": ["F", "M"] * (users.len() // 2) + ["F"] * (users.len() % 2)})
    return Dataset(pl.concat([events, future]), pl.concat([items, twins]), people), split


def test_catalogue_at_keeps_items_seen_or_listed_before_t():
    events = pl.DataFrame({S.ITEM: [1, 2, 2]})
    items = pl.DataFrame({S.ITEM: [1, 2, 3, 4, 5], LISTED: [None, 50, 10, 200, None]})
    assert catalogue_at(items.drop(LISTED), events, 100)[S.ITEM].to_list() == [1, 2]
    assert catalogue_at(items, events, 100)[S.ITEM].to_list() == [1, 2, 3]
    as_dates = items.with_columns(pl.from_epoch(LISTED, time_unit="s"))
    assert catalogue_at(as_dates, events, 100)[S.ITEM].to_list() == [1, 2, 3]
    assert catalogue_at(None, events, 100) is None


def test_split_drops_future_items_from_the_catalogue():
    data, split = planted()
    cut = split_data(data, EvalConfig(test_days=2.0))
    assert cut.ts == split
    assert not cut.train.items[S.ITEM].is_in(list(range(FUTURE, FUTURE + 5))).any()
    assert cut.train.events[S.TS].max() < split and cut.train.users.height == data.users.height
    # The future items are targets, so a leak would be scored as a hit.
    train = TrainData.build(cut.train, now=cut.ts)
    targets = evaluation_targets(train, cut, EvalConfig(test_days=2.0))
    assert targets.filter(pl.col(S.ITEM) >= FUTURE).height > 0


@pytest.mark.parametrize("name", sorted(CHANNELS))
def test_no_channel_recalls_an_item_that_did_not_exist_at_t(name):
    data, split = planted()
    cut = split_data(data, EvalConfig(test_days=2.0))
    train = TrainData.build(cut.train, now=cut.ts, seed=1)
    assert not train.item_ids.is_in(list(range(FUTURE, FUTURE + 5))).any()
    channel = CHANNELS[name]().fit(train)
    recs = channel.recommend(train, 50)
    assert recs.filter(pl.col(S.ITEM) >= FUTURE).height == 0
    table = channel.similar_items(train)
    if table is not None:
        assert table.filter((pl.col(S.ITEM) >= FUTURE) | (pl.col(S.NEIGHBOR) >= FUTURE)).height == 0


def test_user_protocol_holds_out_each_users_next_new_items():
    events = random_log(5, n_events=1500, n_users=30, n_items=40, days=30)
    cfg = EvalConfig(protocol="user", split_quantile=0.7, holdout_items=3, min_history_items=4)
    cut = split_data(Dataset(events), cfg)
    assert cut.protocol == "user" and cut.train.events[S.TS].max() < cut.ts <= cut.test[S.TS].min()
    train = TrainData.build(cut.train, now=cut.ts)
    targets = evaluation_targets(train, cut, cfg)
    # Oracle: per eligible user, the first three items (by first engagement after T) not engaged before T.
    engaged = events.filter(pl.col(S.BEHAVIOR) != "impression")
    expected = set()
    for user in engaged[S.USER].unique().to_list():
        mine = engaged.filter(pl.col(S.USER) == user).sort(S.TS, S.ITEM)
        before = set(mine.filter(pl.col(S.TS) < cut.ts)[S.ITEM].to_list())
        if len(before) < 4:
            continue
        after = []
        for item in mine.filter(pl.col(S.TS) >= cut.ts)[S.ITEM].to_list():
            if item not in before and item not in after:
                after.append(item)
        expected |= {(user, item) for item in after[:3]}
    new = targets.filter(~pl.col("repeat")).select(S.USER, S.ITEM)
    assert set(new.iter_rows()) == expected


def test_user_split_is_at_the_quantile():
    events = random_log(6, n_events=1000, days=20)
    cut = user_split(Dataset(events), 0.8)
    share = cut.train.events.height / events.height
    assert 0.75 < share <= 0.8 + 1e-9


def test_target_pairs_per_user_keeps_first_items():
    engaged = pl.DataFrame({S.USER: [1], S.ITEM: [9]})
    test = pl.DataFrame({S.USER: [1, 1, 1, 1], S.ITEM: [5, 9, 6, 7], S.BEHAVIOR: ["click"] * 4,
                         S.TS: [30, 10, 20, 40]})
    pairs = target_pairs(engaged, test, ["click"], per_user=2)
    assert set(pairs.iter_rows()) == {(1, 5, False), (1, 6, False), (1, 9, True)}


def test_dataset_at_without_items_table():
    events = random_log(7, n_events=100)
    cut = dataset_at(Dataset(events), int(events[S.TS].median()))
    assert cut.items is None and cut.events[S.TS].max() < int(events[S.TS].median())
