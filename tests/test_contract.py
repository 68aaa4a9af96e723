"""One contract every registered channel keeps, checked on the same small logs."""

from __future__ import annotations

import polars as pl
import pytest

from recall import schema as S
from recall.channels import CHANNELS
from recall.context import TrainData
from recall.io import Dataset
from tests.conftest import random_log

N = 7


def fitted(name: str, dataset: Dataset):
    train = TrainData.build(dataset, seed=3)
    channel = CHANNELS[name]().fit(train)
    return channel, train


@pytest.fixture(params=[0, 1], ids=["log0", "log1"])
def dataset(request, tiny_dataset) -> Dataset:
    events = random_log(request.param, n_events=400, n_users=25, n_items=15)
    users = pl.DataFrame({"user_id": list(range(25)), "gender": ["F", "M"] * 12 + ["F"],
                          "age_band": ["18-24", "25-34", "35-44", "45-54", "55+"] * 5})
    return Dataset(events=events, items=tiny_dataset.items, users=users)


@pytest.mark.parametrize("name", sorted(CHANNELS))
def test_channel_contract(name, dataset):
    channel, train = fitted(name, dataset)
    recs = channel.recommend(train, N)
    # Schema and types.
    assert recs.columns == [S.USER, S.ITEM, S.SCORE, S.RANK]
    assert recs.schema[S.USER] == dataset.events.schema[S.USER]
    assert recs.schema[S.ITEM] == dataset.events.schema[S.ITEM]
    assert recs.height > 0
    # No duplicate pairs, at most N per user, ranks 1..m, scores non-increasing with rank.
    assert recs.select(S.USER, S.ITEM).is_duplicated().sum() == 0
    per_user = recs.sort(S.USER, S.RANK).group_by(S.USER, maintain_order=True).agg(S.RANK, S.SCORE)
    for ranks, scores in per_user.select(S.RANK, S.SCORE).iter_rows():
        assert len(ranks) <= N and ranks == list(range(1, len(ranks) + 1))
        assert all(a >= b for a, b in zip(scores, scores[1:]))
    # Only known ids.
    assert recs[S.USER].is_in(train.user_ids.implode()).all()
    assert recs[S.ITEM].is_in(train.item_ids.implode()).all()
    # Deterministic: a fresh fit on the same data gives the same table.
    again, _ = fitted(name, dataset)
    assert again.recommend(train, N).equals(recs)


@pytest.mark.parametrize("name", sorted(n for n, c in CHANNELS.items() if getattr(c, "exclude_interacted", False)))
def test_i2i_channels_exclude_what_the_user_engaged_with(name, dataset):
    channel, train = fitted(name, dataset)
    recs = channel.recommend(train, N)
    seen = train.engaged().select(S.USER, S.ITEM).unique()
    assert recs.join(seen, on=[S.USER, S.ITEM], how="semi").height == 0


@pytest.mark.parametrize("name", sorted(CHANNELS))
def test_i2i_table_contract(name, dataset):
    channel, train = fitted(name, dataset)
    table = channel.similar_items(train)
    if table is None:
        pytest.skip(f"{name} has no item-to-item table")
    assert table.columns == [S.ITEM, S.NEIGHBOR, S.SCORE, S.RANK]
    assert table.filter(pl.col(S.ITEM) == pl.col(S.NEIGHBOR)).height == 0
    assert table.select(S.ITEM, S.NEIGHBOR).is_duplicated().sum() == 0
    assert (table[S.SCORE] > 0).all()
