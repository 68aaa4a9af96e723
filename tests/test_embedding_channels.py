"""Embedding channels: the channel contract, faiss against numpy brute force, planted clusters."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from recall import schema as S
from recall.interface import expand_triggers
from recall.channels.deepwalk import DeepWalk
from recall.channels.item2vec import Item2Vec
from recall.channels.node2vec import Node2Vec
from recall.config import TriggerConfig
from recall.context import TrainData
from recall.embedding import EmbeddingChannel, EmbeddingParams, VectorIndex, neighbour_table, normalise_rows
from recall.errors import RecallError
from recall.io import Dataset, normalise_events
from tests.conftest import random_log

N = 7
CHANNEL_CASES = [(Item2Vec, {}), (DeepWalk, {}), (Node2Vec, {}), (Node2Vec, dict(retrieval="user_vector")),
                 (Item2Vec, dict(session_gap_hours=1.0, retrieval="user_vector", user_vector_half_life_days=2.0)),
                 (DeepWalk, dict(ann="hnsw", faiss_threads=1)), (DeepWalk, dict(trainer="gensim"))]
IDS = [f"{c.name}-{','.join(p) or 'default'}" for c, p in CHANNEL_CASES]


@pytest.fixture(params=[0, 1], ids=["log0", "log1"])
def dataset(request, tiny_dataset) -> Dataset:
    return Dataset(events=random_log(request.param, n_events=400, n_users=25, n_items=15),
                   items=tiny_dataset.items)


def fit(cls, params, dataset):
    train = TrainData.build(dataset, seed=3)
    return cls(cls.Params(dim=8, epochs=3, **params)).fit(train), train


@pytest.mark.parametrize(("cls", "params"), CHANNEL_CASES, ids=IDS)
def test_embedding_channel_contract(cls, params, dataset):
    channel, train = fit(cls, params, dataset)
    recs = channel.recommend(train, N)
    assert recs.columns == [S.USER, S.ITEM, S.SCORE, S.RANK]
    assert recs.schema[S.SCORE] == pl.Float64 and recs.schema[S.RANK] == pl.Int32
    assert recs.height > 0 and recs.select(S.USER, S.ITEM).is_duplicated().sum() == 0
    per_user = recs.sort(S.USER, S.RANK).group_by(S.USER, maintain_order=True).agg(S.RANK, S.SCORE)
    for ranks, scores in per_user.select(S.RANK, S.SCORE).iter_rows():
        assert len(ranks) <= N and ranks == list(range(1, len(ranks) + 1))
        assert all(a >= b for a, b in zip(scores, scores[1:]))
    seen = train.engaged().select(S.USER, S.ITEM).unique()
    assert recs.join(seen, on=[S.USER, S.ITEM], how="semi").height == 0
    again, _ = fit(cls, params, dataset)
    assert again.recommend(train, N).equals(recs)
    np.testing.assert_array_equal(again.vectors_, channel.vectors_)
    table = channel.similar_items(train)
    assert table.columns == [S.ITEM, S.NEIGHBOR, S.SCORE, S.RANK] and table.height > 0
    assert table.filter(pl.col(S.ITEM) == pl.col(S.NEIGHBOR)).height == 0
    assert ((table[S.SCORE] > 0) & (table[S.SCORE] <= 1 + 1e-6)).all()
    # Vectors: unit rows where there is one, zero elsewhere.
    norms = np.linalg.norm(channel.vectors_, axis=1)
    np.testing.assert_allclose(norms[channel.has_vector_], 1, rtol=1e-5)
    assert (norms[~channel.has_vector_] == 0).all()


def brute_force_top_k(vectors: np.ndarray, mask: np.ndarray, k: int) -> dict[int, list[int]]:
    sims = vectors @ vectors.T
    out = {}
    for i in np.flatnonzero(mask):
        row = [(float(sims[i, j]), j) for j in np.flatnonzero(mask) if j != i and sims[i, j] > 0]
        out[i] = [j for s, j in sorted(row, key=lambda t: (-t[0], t[1]))[:k]]
    return out


def table_rows(table: sp.csr_matrix) -> dict[int, list[int]]:
    out = {}
    for i in range(table.shape[0]):
        row = table[i]
        if row.nnz:
            out[i] = row.indices[np.lexsort((row.indices, -row.data))].tolist()
    return out


@pytest.mark.parametrize("ann", ["exact", "ivf"])
def test_faiss_neighbours_equal_numpy_cosine(ann):
    rng = np.random.default_rng(0)
    n, k = 400, 10
    vectors = normalise_rows(rng.normal(size=(n, 16)))
    mask = rng.random(n) < 0.9
    vectors[~mask] = 0
    items = np.flatnonzero(mask)
    # IVF with every cell probed is exhaustive, so it must match too.
    params = EmbeddingParams(ann=ann, ivf_nlist=4, nprobe=4)
    index = VectorIndex.build(vectors[items], items, params)
    assert index.kind == ann
    table = neighbour_table(index, vectors, n, k, block=97)
    got = table_rows(table)
    expected = brute_force_top_k(vectors, mask, k)
    assert got == {i: r for i, r in expected.items() if r}
    for i, row in list(got.items())[:20]:
        np.testing.assert_allclose(table[i, row].toarray().ravel(), vectors[row] @ vectors[i], rtol=1e-5)


def test_hnsw_recall_against_exact():
    rng = np.random.default_rng(1)
    n, k = 4000, 10
    # Clustered vectors, like learned embeddings (uniform random ones in 32-d have no real neighbours).
    centres = rng.normal(size=(40, 32))
    vectors = normalise_rows(centres[rng.integers(0, 40, n)] + 0.5 * rng.normal(size=(n, 32)))
    items = np.arange(n)
    params = EmbeddingParams(ann="auto", ann_threshold=1000, hnsw_m=16, faiss_threads=1)
    approx = VectorIndex.build(vectors, items, params)
    assert approx.kind == "hnsw"
    exact = VectorIndex.build(vectors, items, params.model_copy(update={"ann": "exact"}))
    got = table_rows(neighbour_table(approx, vectors, n, k, block=1000))
    expected = table_rows(neighbour_table(exact, vectors, n, k, block=1000))
    hits = sum(len(set(got.get(i, [])) & set(row)) for i, row in expected.items())
    assert hits / sum(len(r) for r in expected.values()) >= 0.95


class FixedVectors(EmbeddingChannel):
    """A channel whose item vectors are given, to test the retrieval machinery on its own."""

    name = "fixed"
    description = "test channel"

    def __init__(self, params, vectors, mask):
        super().__init__(params)
        self.given = (vectors, mask)

    def item_vectors(self, data):
        return self.given


def random_vectors(train: TrainData, seed: int, dim: int = 6):
    rng = np.random.default_rng(seed)
    vectors = normalise_rows(rng.normal(size=(train.n_items, dim)))
    mask = rng.random(train.n_items) < 0.85
    return np.where(mask[:, None], vectors, 0).astype(np.float32), mask


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("half_life", [None, 1.5])
def test_user_vector_retrieval_equals_numpy(seed, half_life, tiny_dataset):
    events = random_log(seed, n_events=600, n_users=40, n_items=30)
    items = pl.DataFrame({"item_id": np.arange(35) * 10})  # five cold items without events
    train = TrainData.build(Dataset(events=events, items=items))
    vectors, mask = random_vectors(train, seed)
    n = 8
    channel = FixedVectors(EmbeddingParams(retrieval="user_vector", user_vector_half_life_days=half_life),
                           vectors, mask).fit(train)
    got = channel.recommend(train, n)
    # Oracle: weights w(u, i) = max over u's events on i of behaviour weight x 0.5^(age / half-life).
    hl = half_life or train.triggers.half_life_days
    bw = train.triggers.behavior_weights
    weights = np.zeros((train.n_users, train.n_items))
    for u, i, b, ts in train.events.select("user_idx", "item_idx", "behavior", "ts").iter_rows():
        age = (train.now - ts) / 86400
        if age <= train.triggers.window_days and bw[b] > 0:
            weights[u, i] = max(weights[u, i], bw[b] * 0.5 ** (age / hl))
    seen = train.interactions.toarray() > 0
    expected = []
    for u in range(train.n_users):
        user = weights[u] @ vectors
        if not np.linalg.norm(user):
            continue
        scores = vectors @ (user / np.linalg.norm(user))
        cand = [(s, j) for j, s in enumerate(scores) if mask[j] and not seen[u, j] and s > 0]
        for rank, (s, j) in enumerate(sorted(cand, key=lambda t: (-t[0], t[1]))[:n], 1):
            expected.append((int(train.user_ids[u]), int(train.item_ids[j]), float(s), rank))
    got_rows = got.sort(S.USER, S.RANK).rows()
    assert [(u, i, r) for u, i, _, r in got_rows] == [(u, i, r) for u, i, _, r in expected]
    np.testing.assert_allclose([s for _, _, s, _ in got_rows], [s for _, _, s, _ in expected], rtol=1e-5,
                               atol=1e-6)


def test_trigger_retrieval_uses_the_cosine_table(tiny_dataset):
    train = TrainData.build(tiny_dataset)
    vectors, mask = random_vectors(train, 5)
    channel = FixedVectors(EmbeddingParams(top_k=4), vectors, mask).fit(train)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, 0)
    sims[~mask] = 0
    sims[:, ~mask] = 0
    table = np.zeros_like(sims)
    for i in range(train.n_items):
        top = [j for j in np.lexsort((np.arange(train.n_items), -sims[i])) if sims[i, j] > 0][:4]
        table[i, top] = sims[i, top]
    np.testing.assert_allclose(channel.similarity_.toarray(), table, rtol=1e-5, atol=1e-7)
    expected = expand_triggers(train, sp.csr_matrix(table), 5)
    got = channel.recommend(train, 5)
    assert got.select(S.USER, S.ITEM, S.RANK).equals(expected.select(S.USER, S.ITEM, S.RANK))


@pytest.mark.parametrize("seed", [0, 1])
def test_recommend_searches_only_trigger_rows_with_the_same_result(seed):
    # Two triggers per user: many items with vectors are nobody's trigger.
    dataset = Dataset(events=random_log(seed, n_events=300, n_users=20, n_items=40))
    train = TrainData.build(dataset, triggers=TriggerConfig(max_triggers=2), seed=3)
    vectors, mask = random_vectors(train, seed)
    channel = FixedVectors(EmbeddingParams(top_k=5), vectors, mask).fit(train)
    got = channel.recommend(train, 6)
    assert set(channel.neighbours_) == {"triggers"}  # the other rows were not searched
    triggered = np.unique(train.trigger_matrix.indices)
    assert channel.row_sets_["others"].size > 0
    np.testing.assert_array_equal(channel.row_sets_["triggers"], triggered[mask[triggered]])
    # The same candidates as from the whole table, searched by brute force.
    sims = np.where(mask[:, None] & mask[None, :], vectors @ vectors.T, 0)
    np.fill_diagonal(sims, 0)
    table = np.zeros_like(sims)
    for i in range(train.n_items):
        top = [j for j in np.lexsort((np.arange(train.n_items), -sims[i])) if sims[i, j] > 0][:5]
        table[i, top] = sims[i, top]
    expected = expand_triggers(train, sp.csr_matrix(table), 6)
    assert got.select(S.USER, S.ITEM, S.RANK).equals(expected.select(S.USER, S.ITEM, S.RANK))
    np.testing.assert_allclose(channel.similarity_.toarray(), table, rtol=1e-5, atol=1e-7)
    # Another data's triggers (here: up to 50 per user) are expanded over the whole table.
    wider = TrainData.build(dataset, seed=3)
    assert mask[np.setdiff1d(wider.trigger_matrix.indices, channel.row_sets_["triggers"])].any()
    expected = expand_triggers(wider, sp.csr_matrix(table), 6)
    assert channel.recommend(wider, 6).select(S.USER, S.ITEM, S.RANK).equals(
        expected.select(S.USER, S.ITEM, S.RANK))


def clustered_log(seed: int) -> Dataset:
    """Two disjoint clusters of items (0-19 and 100-119): each user's sessions stay in one."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(120):
        base = 0 if u % 2 else 100
        for s in range(4):
            start = 1_700_000_000 + s * 86400 + u * 10
            for k, item in enumerate(rng.choice(20, 6, replace=False)):
                rows.append((u, base + int(item), "click", start + 60 * k))
    frame = pl.DataFrame(rows, schema=["user_id", "item_id", "behavior", "ts"], orient="row")
    return Dataset(normalise_events(frame, "<clusters>"))


@pytest.mark.parametrize(("cls", "params"), [(Item2Vec, {}), (DeepWalk, {}), (Node2Vec, {}),
                                             (DeepWalk, dict(trainer="gensim"))])
def test_planted_clusters_are_neighbours(cls, params):
    train = TrainData.build(clustered_log(0), seed=1)
    channel = cls(cls.Params(dim=16, epochs=5, top_k=5, **params)).fit(train)
    table = channel.similar_items(train)
    assert table[S.ITEM].n_unique() == 40
    cluster = (pl.col(S.ITEM) >= 100) == (pl.col(S.NEIGHBOR) >= 100)
    assert table.filter(~cluster).height == 0


def test_publish_vectors_and_cold_items(tiny_dataset):
    items = pl.concat([tiny_dataset.items, pl.DataFrame({"item_id": [999], "category_id": [0]},
                                                        schema=tiny_dataset.items.schema)])
    train = TrainData.build(Dataset(events=tiny_dataset.events, items=items))
    channel = Item2Vec(Item2Vec.Params(dim=4, publish_vectors=True)).fit(train)
    cold = int(train.item_index(pl.Series([999]))[0])
    assert not channel.has_vector_[cold] and channel.similarity_[cold].nnz == 0
    (path, table), = channel.extra_tables(train).items()
    assert path == "embeddings/item2vec.parquet"
    assert table.schema == pl.Schema({S.ITEM: train.item_ids.dtype, "vector": pl.List(pl.Float32)})
    assert 999 not in table[S.ITEM].to_list() and table.height == channel.has_vector_.sum()
    first = int(train.item_index(table[S.ITEM].head(1))[0])
    np.testing.assert_array_equal(np.array(table["vector"][0].to_list(), np.float32), channel.vectors_[first])
    assert Item2Vec(Item2Vec.Params(dim=4)).fit(train).extra_tables(train) == {}


def test_wrong_vector_shape_is_refused(tiny_dataset):
    train = TrainData.build(tiny_dataset)
    with pytest.raises(RecallError, match="item_vectors must return"):
        FixedVectors(EmbeddingParams(), np.zeros((3, 4), np.float32), np.ones(3, bool)).fit(train)
