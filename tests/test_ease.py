"""EASE against numpy's dense inverse, the max_items cut and its record."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from recall import schema as S
from recall.channels import CHANNELS
from recall.channels.ease import (EASE, EASEParams, EASEWeights, ease_weights, engagement, invert_spd_in_place,
                                  most_engaged)
from recall.config import load_config
from recall.context import TrainData
from recall.errors import RecallError
from recall.io import Dataset, write_dataset
from recall.pipeline import run
from recall.synth import synthesize
from tests.conftest import random_log


def numpy_ease(x: np.ndarray, lam: float) -> np.ndarray:
    """Steck's closed form, literally: B = I - P diag(1/diag(P)), P = inv(X^T X + lam I)."""
    p = np.linalg.inv(x.T @ x + lam * np.eye(x.shape[1]))
    b = np.eye(x.shape[1]) - p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


def random_binary(seed: int, users: int = 40, items: int = 12, density: float = 0.3) -> np.ndarray:
    return (np.random.default_rng(seed).random((users, items)) < density).astype(np.float64)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("lam", [0.5, 10.0, 500.0])
def test_ease_weights_match_numpy(seed, lam):
    x = random_binary(seed)
    got = ease_weights(sp.csr_matrix(x), lam, np.float64, row_block=5)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, numpy_ease(x, lam), rtol=1e-9, atol=1e-12)
    assert np.all(np.diag(got) == 0)


def test_ease_weights_float32_close_to_float64():
    x = random_binary(3, users=200, items=60, density=0.1)
    got = ease_weights(sp.csr_matrix(x), 5.0, np.float32)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, numpy_ease(x, 5.0), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("users, space", [(9, True), (50, False)])  # 9 users, 24 items: the user-space solve
@pytest.mark.parametrize("lam", [0.5, 20.0])
def test_both_solves_give_numpys_weights_and_scores(users, space, lam):
    x = random_binary(users, users=users, items=24, density=0.25)
    x[0] = 0.0  # a user without engagement: left out of the solve, still scored
    x[:, 5] = 0.0  # an item nobody engaged with
    weights = EASEWeights(sp.csr_matrix(x), lam, np.float64, row_block=7)
    assert weights.user_space is space
    expected = numpy_ease(x, lam)
    rows = np.vstack([weights.rows(start, min(start + 7, 24)) for start in range(0, 24, 7)])
    np.testing.assert_allclose(rows, expected, rtol=1e-8, atol=1e-10)
    assert np.all(np.diag(rows) == 0)
    others = random_binary(users + 1, users=5, items=24, density=0.3)  # rows not in the fit, too
    for scored in (x, others):
        np.testing.assert_allclose(weights.scores(sp.csr_matrix(scored)), scored @ expected, rtol=1e-8, atol=1e-9)


def test_user_space_float32_close_to_float64():
    x = random_binary(4, users=30, items=400, density=0.05)
    weights = EASEWeights(sp.csr_matrix(x), 5.0, np.float32, row_block=128)
    assert weights.user_space and weights.rows(0, 128).dtype == np.float32
    np.testing.assert_allclose(weights.rows(0, 400), numpy_ease(x, 5.0), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("n", [7, 1100])  # one block and several blocks of the symmetric fill
def test_in_place_inverse(n):
    rng = np.random.default_rng(n)
    a = rng.random((n, 5))
    matrix = a @ a.T + np.eye(n)
    expected = np.linalg.inv(matrix)
    buffer = matrix.copy()
    got = invert_spd_in_place(buffer)
    assert np.shares_memory(got, buffer)
    np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-10)
    assert np.array_equal(got, got.T)


def test_not_positive_definite_is_a_recall_error():
    with pytest.raises(RecallError, match="lambda"):
        invert_spd_in_place(-np.eye(3))
    with pytest.raises(RecallError, match="lambda > 0"):
        ease_weights(sp.csr_matrix(np.eye(3)), 0.0)


def fitted(params: dict, seed: int = 0):
    events = random_log(seed, n_events=500, n_users=30, n_items=15)
    train = TrainData.build(Dataset(events=events))
    channel = EASE(EASEParams(**params)).fit(train)
    return channel, train


def test_i2i_table_is_the_top_positive_weights_of_each_row():
    channel, train = fitted({"lambda": 5.0, "dtype": "float64", "top_k": 4})
    x = engagement(train, channel.params).toarray()
    b = numpy_ease(x, 5.0)
    table = channel.similar_items(train)
    for item in range(train.n_items):
        row = b[item]
        positive = [j for j in np.lexsort((np.arange(row.size), -row)) if row[j] > 0][:4]
        got = table.filter(pl.col(S.ITEM) == train.item_ids[item]).sort(S.RANK)
        assert got[S.NEIGHBOR].to_list() == [train.item_ids[int(j)] for j in positive]
        np.testing.assert_allclose(got[S.SCORE].to_numpy(), row[positive], rtol=1e-9)


def test_max_items_keeps_the_most_engaged_and_records_the_cut(caplog):
    with caplog.at_level(logging.INFO, logger="recall"):
        channel, train = fitted({"lambda": 5.0, "max_items": 6})
    x = engagement(train, channel.params)
    users = np.bincount(x.indices, minlength=train.n_items)
    kept = most_engaged(x, 6)
    assert kept.size == 6 and users[kept].min() >= np.delete(users, kept).max()
    facts = channel.facts()
    assert facts == {"engaged_items": int((users > 0).sum()), "items_kept": 6,
                     "items_cut": int((users > 0).sum()) - 6, "max_items": 6}
    assert any(r.event == "ease.items_cut" for r in caplog.records if hasattr(r, "event"))
    table = channel.similar_items(train)
    allowed = train.item_ids.gather(kept).implode()
    assert table[S.ITEM].is_in(allowed).all() and table[S.NEIGHBOR].is_in(allowed).all()
    recs = channel.recommend(train, 5)
    assert recs[S.ITEM].is_in(allowed).all()
    # The cut is exactly EASE on the kept columns.
    b = numpy_ease(x[:, kept].toarray(), 5.0)
    top = table.filter(pl.col(S.RANK) == 1).sort(S.ITEM)
    for item_id, neighbor_id in top.select(S.ITEM, S.NEIGHBOR).iter_rows():
        i = int(np.flatnonzero(train.item_ids.gather(kept) == item_id)[0])
        assert train.item_ids[int(kept[np.argmax(b[i])])] == neighbor_id


def test_lambda_is_the_config_key():
    cfg = load_config(None, ["channels.ease.lambda=250", "channels.ease.max_items=100"])
    assert cfg.channels["ease"].lam == 250.0
    assert cfg.model_dump()["channels"]["ease"]["lambda"] == 250.0
    with pytest.raises(RecallError, match="channels.ease.lambda: "):
        load_config(None, ["channels.ease.lambda=0"])


def test_the_cut_is_in_the_run_manifest(tmp_path):
    write_dataset(synthesize(200, 120, 4, 2), tmp_path / "data")
    others = [f"channels.{name}.enabled=false" for name in CHANNELS if name not in ("ease", "itemcf")]
    cfg = load_config(None, [f'data.dir="{tmp_path / "data"}"', f'output.root="{tmp_path / "out"}"',
                             "channels.itemcf.enabled=true", "channels.ease.max_items=30", *others])
    summary = run(cfg)
    manifest = json.loads((Path(summary["published"]) / "manifest.json").read_text())
    facts = manifest["channel_facts"]
    assert set(facts) == {"ease"}  # itemCF has nothing to report
    assert facts["ease"]["items_kept"] == 30 and facts["ease"]["items_cut"] > 0
    assert facts["ease"]["engaged_items"] == 30 + facts["ease"]["items_cut"]
