"""Metrics against a brute-force oracle, the time split, the targets, the ALS baseline and the full report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recall import analysis as A
from recall.config import Config, EvalConfig
from recall.context import TrainData
from recall.errors import RecallError
from recall.baselines import implicit_als
from recall.evaluation import evaluate, metrics, split_data, with_quotas
from recall.split import target_pairs
from recall.io import Dataset, normalise_events
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
    cut = split_data(Dataset(events), EvalConfig(test_days=2))
    train, test, split = cut.train, cut.test, cut.ts
    assert train.events["ts"].max() < split <= test["ts"].min()
    assert test["ts"].max() < split + 2 * 86400
    assert train.events.height + test.height == events.height


def test_split_outside_the_log_is_a_clear_error():
    events = random_log(3)
    with pytest.raises(RecallError, match="empty"):
        split_data(Dataset(events), EvalConfig(split_ts=1))


# --- target pairs, baselines, the full report -----------------------------------------------------------


def test_target_pairs_flag_repeats():
    events = random_log(4, n_events=600, n_users=10, n_items=12, days=10)
    cut = split_data(Dataset(events), EvalConfig(test_days=3))
    train = TrainData.build(cut.train, now=cut.ts)
    pairs = target_pairs(train.engaged(), cut.test, EvalConfig().target_behaviors)
    engaged = {(u, i) for u, i, b in cut.train.events.select("user_id", "item_id", "behavior").iter_rows()
               if b != "impression"}
    wanted = {(u, i) for u, i, b in cut.test.select("user_id", "item_id", "behavior").iter_rows()
              if b != "impression"}
    assert {(u, i): r for u, i, r in pairs.iter_rows()} == {p: p in engaged for p in wanted}


def block_log(n_users: int = 60, n_items: int = 30) -> Dataset:
    """Two communities: even users engage only with items 0..14, odd users only with items 15..29."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(n_users):
        block = (u % 2) * (n_items // 2)
        for i in rng.choice(n_items // 2, 6, replace=False):
            rows.append((u, int(block + i), "click", 1_700_000_000 + int(rng.integers(0, 86400))))
    frame = pl.DataFrame(rows, schema={"user_id": pl.Int64, "item_id": pl.Int64, "behavior": pl.String,
                                       "ts": pl.Int64}, orient="row")
    return Dataset(normalise_events(frame, Path("<blocks>")))


def test_als_recommends_within_the_planted_community_and_never_a_liked_item():
    train = TrainData.build(block_log(), seed=5)
    users = train.user_ids
    params = dict(factors=8, iterations=20, regularization=0.01)
    recs = implicit_als(train, users, 3, **params)
    assert recs.columns == ["user_id", "item_id", "score", "rank"]
    assert recs.group_by("user_id").len()["len"].max() == 3
    own_block = recs.with_columns(ok=(pl.col("user_id") % 2) == (pl.col("item_id") >= 15))
    assert own_block["ok"].all()
    seen = train.engaged().select("user_id", "item_id").unique()
    assert recs.join(seen, on=["user_id", "item_id"], how="semi").height == 0
    again = implicit_als(train, users, 3, **params)
    assert again.equals(recs)  # seeded


def small_config(**extra) -> Config:
    return Config.model_validate({
        "candidates_per_user": extra.pop("candidates_per_user", 8),
        "channels": {"itemcf": {"quota": 4}, "usercf": {"quota": 3},
                     "crowd": {"quota": 1, "min_support": 1, "min_users": 1, "attributes": ["gender"]}},
        "filters": {"reserve": 2},
        "eval": {"test_days": 2.0, "ks": [2, 5, 8]}, **extra})


def test_every_user_gets_the_full_budget_when_the_catalogue_allows():
    events = random_log(8, n_events=1500, n_users=40, n_items=300, days=10)
    cfg = small_config(candidates_per_user=20)
    report = evaluate(cfg, Dataset(events, None, pl.DataFrame({"user_id": np.arange(45),
                                                                "gender": ["F", "M"] * 22 + ["F"]})))
    assert report["budget_filled"] == {"mean_length": 20.0, "full_share": 1.0}


@pytest.fixture(scope="module")
def small_report() -> dict:
    rng = np.random.default_rng(3)
    events = random_log(5, n_events=1500, n_users=40, n_items=30, days=10)
    users = pl.DataFrame({"user_id": np.arange(45), "gender": rng.choice(["F", "M"], 45)})
    items = pl.DataFrame({"item_id": np.arange(30) * 10, "category_id": rng.integers(0, 3, 30)})
    return evaluate(small_config(), Dataset(events, items, users))


def test_report_has_every_part(small_report):
    report = small_report
    names = {r["name"] for r in report["results"]}
    assert {"itemcf", "usercf", "crowd", "merged", "merged_equal", "merged_unfiltered", "popularity",
            "popularity_recent", "implicit_bm25", "implicit_als", "ease_baseline"} <= names
    # Every baseline is served as a deployment would: users it cannot serve get popular items.
    for name in ("implicit_bm25", "implicit_als", "ease_baseline"):
        row = next(r for r in report["results"] if r["name"] == name and r["segment"] == "all" and r["k"] == 8)
        pop = next(r for r in report["results"] if r["name"] == "popularity" and r["segment"] == "all"
                   and r["k"] == 8)
        assert row["hit_rate"] > 0 and row["coverage"] > 0 and pop["recall"] > 0
    # Every test user gets the full budget or every catalogue item they have not engaged with yet:
    # the hot list backs every list up. (This tiny log's users have engaged with most of its 30 items.)
    assert 0 < report["budget_filled"]["mean_length"] <= 8.0
    head = report["headline"]["all"]["8"]
    assert head["best_baseline"] in names and head["ratio"] == pytest.approx(head["merged"] / head["baseline"])
    assert report["quotas"] == {"configured": {"itemcf": 4, "usercf": 3, "crowd": 1},
                                "equal": {"itemcf": 3, "usercf": 3, "crowd": 2}}
    segments = report["segment_users"]
    assert segments["cold"] + segments["light"] + segments["heavy"] == segments["all"] == report["test_users"]
    assert segments["light"] + segments["heavy"] == segments["warm"]
    assert {r["segment"] for r in report["segment_results"]} <= set(A.USER_SEGMENTS + A.ITEM_SEGMENTS)
    analysis = report["analysis"]
    assert set(analysis["overlap"]) == {"2", "5", "8"} and len(analysis["overlap"]["5"]) == 3
    assert set(analysis["marginal_gain"]) == {"itemcf", "usercf", "crowd"}
    assert set(analysis["merged_vs_equal"]) == {"2", "5", "8"}
    json.dumps(report)  # JSON-ready


def test_curves_agree_with_the_metric_rows(small_report):
    for row in small_report["results"]:
        if row["segment"] == "all":
            assert small_report["curves"][row["name"]][row["k"] - 1] == pytest.approx(row["recall"], abs=1e-6)


def test_repeat_items_are_scored_even_when_excluded_from_the_main_targets(small_report):
    repeat = [r for r in small_report["segment_results"] if r["segment"] == "repeat_items"]
    assert small_report["segment_users"]["repeat_items"] > 0 and repeat
    # Channels that exclude what the user engaged with can never hit a repeat item.
    assert all(r["recall"] == 0 for r in repeat if r["name"] in ("itemcf", "usercf"))


def test_merged_equal_is_the_merge_under_equal_quotas(small_report):
    rows = {(r["name"], r["k"]): r["recall"] for r in small_report["results"] if r["segment"] == "all"}
    equal_cfg = with_quotas(small_config(), {"itemcf": 3, "usercf": 3, "crowd": 2})
    rng = np.random.default_rng(3)
    events = random_log(5, n_events=1500, n_users=40, n_items=30, days=10)
    users = pl.DataFrame({"user_id": np.arange(45), "gender": rng.choice(["F", "M"], 45)})
    items = pl.DataFrame({"item_id": np.arange(30) * 10, "category_id": rng.integers(0, 3, 30)})
    again = evaluate(equal_cfg, Dataset(events, items, users))
    for r in again["results"]:
        if r["segment"] == "all" and r["name"] == "merged":
            assert rows[("merged_equal", r["k"])] == pytest.approx(r["recall"])
