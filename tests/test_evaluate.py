"""Metrics against a brute-force oracle, and the time split."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from recall.config import EvalConfig
from recall.errors import RecallError
from recall.evaluate import metrics, time_split
from recall.io import Dataset
from tests.conftest import random_log


def brute_metrics(cands: dict, targets: dict, k: int, n_items: int) -> dict:
    recall = hit = ndcg = 0.0
    covered = set()
    for user, wanted in targets.items():
        top = cands.get(user, [])[:k]
        covered.update(top)
        hits = [r for r, item in enumerate(top, 1) if item in wanted]
        recall += len(hits) / len(wanted)
        hit += bool(hits)
        idcg = sum(1 / math.log2(r + 1) for r in range(1, min(len(wanted), k) + 1))
        ndcg += sum(1 / math.log2(r + 1) for r in hits) / idcg
    n = len(targets)
    return {"recall": recall / n, "hit_rate": hit / n, "ndcg": ndcg / n, "coverage": len(covered) / n_items}


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    cands, targets = {}, {}
    for user in range(20):
        if rng.random() < 0.8:
            cands[user] = list(rng.choice(50, rng.integers(0, 30), replace=False))
        if rng.random() < 0.7 or not targets:
            targets[user] = set(rng.choice(50, rng.integers(1, 8), replace=False))
    cand_frame = pl.DataFrame([(u, int(i), r) for u, items in cands.items() for r, i in enumerate(items, 1)],
                              schema={"user_id": pl.Int64, "item_id": pl.Int64, "rank": pl.Int64}, orient="row")
    target_frame = pl.DataFrame([(u, int(i)) for u, items in targets.items() for i in items],
                                schema={"user_id": pl.Int64, "item_id": pl.Int64}, orient="row")
    got = metrics(cand_frame, target_frame, [1, 5, 20], n_items=50)
    for k in (1, 5, 20):
        # Coverage counts items recommended to evaluated users only, as the oracle does.
        expected = brute_metrics(cands, targets, k, 50)
        for name, value in expected.items():
            assert got[k][name] == pytest.approx(value), (k, name)


def test_time_split_never_leaks_the_future():
    events = random_log(3, n_events=500, days=10)
    train, test, split = time_split(Dataset(events), EvalConfig(test_days=2))
    assert train.events["ts"].max() < split <= test["ts"].min()
    assert test["ts"].max() < split + 2 * 86400
    assert train.events.height + test.height == events.height


def test_split_outside_the_log_is_a_clear_error():
    events = random_log(3)
    with pytest.raises(RecallError, match="empty"):
        time_split(Dataset(events), EvalConfig(split_ts=1))
