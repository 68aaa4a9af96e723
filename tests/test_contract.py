"""One contract every registered channel keeps, checked on the same small logs.

Parametrised over the registry, so a new channel is covered the moment it is
registered; ``VARIANTS`` adds non-default parameter sets worth checking too.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from recall import schema as S
from recall.channels import CHANNELS, I2IChannel
from recall.context import TrainData
from recall.io import Dataset
from tests.conftest import random_log

N = 7

# Extra parameter sets per channel (the defaults are always checked).
VARIANTS: dict[str, list[dict]] = {
    "als": [dict(ann="hnsw", faiss_threads=1, aggregate="max", factors=4)],
    "association": [dict(session_gap_hours=12, popularity_normalize=True, top_k=5)],
    "crowd": [dict(min_support=5, min_users=2)],
    "item2vec": [dict(retrieval="user_vector")],
    "ease": [dict(max_items=6, normalize=True, dtype="float64")],
    "swing": [dict(max_users_per_item=3, min_user_items=1, normalize=False)],
}
CASES = [(name, {}) for name in sorted(CHANNELS)] + [
    (name, params) for name, variants in sorted(VARIANTS.items()) if name in CHANNELS for params in variants]
CASE_IDS = [name + ("" if not params else "-" + ",".join(params)) for name, params in CASES]


def fitted(name: str, params: dict, dataset: Dataset):
    train = TrainData.build(dataset, seed=3)
    cls = CHANNELS[name]
    return cls(cls.Params(**params)).fit(train), train


@pytest.fixture(params=[0, 1], ids=["log0", "log1"])
def dataset(request, tiny_dataset) -> Dataset:
    events = random_log(request.param, n_events=400, n_users=25, n_items=15)
    users = pl.DataFrame({"user_id": list(range(25)), "gender": ["F", "M"] * 12 + ["F"],
                          "age_band": ["18-24", "25-34", "35-44", "45-54", "55+"] * 5})
    return Dataset(events=events, items=tiny_dataset.items, users=users)


@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_channel_contract(name, params, dataset):
    channel, train = fitted(name, params, dataset)
    recs = channel.recommend(train, N)
    # Schema and types.
    assert recs.columns == [S.USER, S.ITEM, S.SCORE, S.RANK]
    assert recs.schema[S.USER] == dataset.events.schema[S.USER]
    assert recs.schema[S.ITEM] == dataset.events.schema[S.ITEM]
    assert recs.schema[S.SCORE] == pl.Float64 and recs.schema[S.RANK] == pl.Int32
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
    # Channels that exclude what the user engaged with really do.
    if getattr(channel, "exclude_interacted", False):
        seen = train.engaged().select(S.USER, S.ITEM).unique()
        assert recs.join(seen, on=[S.USER, S.ITEM], how="semi").height == 0
    # Deterministic: a fresh fit on the same data gives the same table.
    again, _ = fitted(name, params, dataset)
    assert again.recommend(train, N).equals(recs)


@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_i2i_table_contract(name, params, dataset):
    channel, train = fitted(name, params, dataset)
    table = channel.similar_items(train)
    if not isinstance(channel, I2IChannel):
        assert table is None, f"{name} is not an i2i channel but returns a table"
        return
    assert table.columns == [S.ITEM, S.NEIGHBOR, S.SCORE, S.RANK]
    assert table.height > 0
    assert table.filter(pl.col(S.ITEM) == pl.col(S.NEIGHBOR)).height == 0
    assert table.select(S.ITEM, S.NEIGHBOR).is_duplicated().sum() == 0
    assert (table[S.SCORE] > 0).all()


@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_recommend_by_user_shard_equals_all_at_once(name, params, dataset):
    """Streaming users shard by shard through the fitted model gives exactly the all-users table."""
    channel, train = fitted(name, params, dataset)
    everyone = channel.recommend(train, N).sort(S.USER, S.RANK)
    users = np.arange(train.n_users)
    shards = [users[users % 3 == k] for k in range(3)] + [users[:5], users[5:]]  # scattered, then contiguous
    scattered = pl.concat([channel.recommend(train, N, users=s) for s in shards[:3]]).sort(S.USER, S.RANK)
    contiguous = pl.concat([channel.recommend(train, N, users=s) for s in shards[3:]]).sort(S.USER, S.RANK)
    assert scattered.equals(everyone)
    assert contiguous.equals(everyone)
    one = channel.recommend(train, N, users=np.array([7]))
    assert one[S.USER].unique().to_list() in ([train.user_ids[7]], [])
    assert one.equals(everyone.filter(pl.col(S.USER) == train.user_ids[7]))
