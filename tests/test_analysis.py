"""Channel analysis against brute-force oracles written with plain Python sets."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recall import analysis as A
from recall.config import SegmentsConfig
from recall.evaluation import metrics
from recall.merge import merge_channels

CHANNELS = ["a", "b", "c"]


def random_lists(seed: int, n_users: int = 15, n_items: int = 30, max_len: int = 12) -> dict[str, dict]:
    """Per channel, per user, a ranked list of distinct items (some users missing from some channels)."""
    rng = np.random.default_rng(seed)
    lists = {}
    for name in CHANNELS:
        lists[name] = {u: [int(i) for i in rng.choice(n_items, rng.integers(1, max_len), replace=False)]
                       for u in range(n_users) if rng.random() < 0.75}
    return lists


def to_frames(lists: dict[str, dict]) -> dict[str, pl.DataFrame]:
    schema = {"user_id": pl.Int64, "item_id": pl.Int64, "score": pl.Float64, "rank": pl.Int32}
    return {name: pl.DataFrame([(u, i, 1.0 / r, r) for u, items in per_user.items() for r, i in enumerate(items, 1)],
                               schema=schema, orient="row")
            for name, per_user in lists.items()}


def random_targets(seed: int, n_users: int = 15, n_items: int = 30) -> dict[int, set]:
    rng = np.random.default_rng(seed + 100)
    return {u: {int(i) for i in rng.choice(n_items, rng.integers(1, 6), replace=False)}
            for u in range(n_users) if rng.random() < 0.8}


def target_frame(targets: dict[int, set]) -> pl.DataFrame:
    return pl.DataFrame([(u, i) for u, items in targets.items() for i in items],
                        schema={"user_id": pl.Int64, "item_id": pl.Int64}, orient="row")


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [1, 4, 20])
def test_overlap_matches_brute_force(seed, k):
    lists = random_lists(seed)
    users = list(range(18))  # users 15..17 have no list anywhere: they must not count
    got = A.overlap(to_frames(lists), pl.DataFrame({"user_id": users}), k)
    for a in CHANNELS:
        for b in CHANNELS:
            values = []
            for u in users:
                sa, sb = set(lists[a].get(u, [])[:k]), set(lists[b].get(u, [])[:k])
                if sa | sb:
                    values.append(len(sa & sb) / len(sa | sb))
            row = got.filter((pl.col("channel") == a) & (pl.col("other") == b))
            assert row["jaccard"][0] == pytest.approx(np.mean(values)), (a, b)
            assert row["users"][0] == len(values)
    matrix = A.overlap_matrix(got, CHANNELS)
    assert all(matrix[i][i] == pytest.approx(1.0) for i in range(3))
    assert np.allclose(matrix, np.array(matrix).T)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [2, 5, 20])
def test_unique_hits_match_brute_force(seed, k):
    lists, targets = random_lists(seed), random_targets(seed)
    got = {name: (hits, unique) for name, hits, unique in
           A.unique_hits(to_frames(lists), target_frame(targets), k).iter_rows()}
    for name in CHANNELS:
        hits = unique = 0
        for u, wanted in targets.items():
            own = set(lists[name].get(u, [])[:k]) & wanted
            others = set().union(*(set(lists[o].get(u, [])[:k]) for o in CHANNELS if o != name))
            hits += len(own)
            unique += len(own - others)
        assert got[name] == (hits, unique), name


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=6), st.integers(0, 300))
def test_renormalise_keeps_total_and_proportions(quotas, total):
    named = {f"c{i}": q for i, q in enumerate(quotas)}
    got = A.renormalise(named, total)
    if sum(quotas) == 0:
        assert set(got.values()) == {0}
        return
    assert sum(got.values()) == total
    for name, q in named.items():
        # Largest-remainder rounding: every share is within one slot of the exact proportion.
        assert abs(got[name] - q * total / sum(quotas)) < 1


def test_equal_quotas_split_the_budget_evenly():
    assert A.equal_quotas(["a", "b", "c"], 200) == {"a": 67, "b": 67, "c": 66}
    assert A.equal_quotas([], 10) == {}


def brute_merge(lists: dict[str, dict], quotas: dict[str, int], budget: int) -> dict[int, list]:
    """merge_channels' rule by hand: position rank / quota, best per item, smallest positions first."""
    order = {name: i for i, name in enumerate(sorted(lists))}
    out = {}
    for u in {u for per_user in lists.values() for u in per_user}:
        best = {}
        for name, per_user in lists.items():
            if quotas.get(name, 0) == 0:
                continue
            for r, item in enumerate(per_user.get(u, []), 1):
                key = (r / quotas[name], order[name])
                best[item] = min(best.get(item, key), key)
        out[u] = [item for item, _ in sorted(best.items(), key=lambda kv: (kv[1], kv[0]))][:budget]
    return out


def brute_recall(merged: dict[int, list], targets: dict[int, set], k: int) -> float:
    return sum(len(set(merged.get(u, [])[:k]) & wanted) / len(wanted) for u, wanted in targets.items()) / len(targets)


@pytest.mark.parametrize("seed, workers", [(0, 1), (1, 1), (2, 1), (0, 3)])
def test_marginal_gain_is_merge_with_minus_merge_without(seed, workers):
    lists, targets = random_lists(seed), random_targets(seed)
    quotas, budget, ks = {"a": 3, "b": 2, "c": 1}, 6, [3, 6]

    def merge(cands, q):
        return merge_channels(cands, q, budget)

    gains = A.marginal_gains(to_frames(lists), quotas, merge,
                             lambda merged: metrics(merged, target_frame(targets), ks, 30), workers=workers)
    for name in CHANNELS:
        rest = {n: lists[n] for n in CHANNELS if n != name}
        renorm = A.renormalise({n: quotas[n] for n in rest}, sum(quotas.values()))
        for k in ks:
            expected = (brute_recall(brute_merge(lists, quotas, budget), targets, k)
                        - brute_recall(brute_merge(rest, renorm, budget), targets, k))
            assert gains[name][k]["recall"] == pytest.approx(expected), (name, k)


def test_a_channel_without_slots_gains_nothing():
    lists, targets = random_lists(0), random_targets(0)
    gains = A.marginal_gains(to_frames(lists), {"a": 3, "b": 0, "c": 2}, lambda c, q: merge_channels(c, q, 5),
                             lambda merged: metrics(merged, target_frame(targets), [5], 30))
    assert gains["b"][5] == {"recall": 0.0, "hit_rate": 0.0, "ndcg": 0.0, "coverage": 0.0}


def test_user_segments_by_distinct_history_items():
    engaged = pl.DataFrame({"user_id": [1, 1, 1, 2, 2, 2, 2, 3], "item_id": [5, 5, 6, 1, 2, 3, 4, 9]})
    users = pl.DataFrame({"user_id": [1, 2, 3, 4]})
    got = A.user_segments(engaged, users, SegmentsConfig(cold_max_items=1, light_max_items=2))
    # user 1: 2 distinct items (light); 2: 4 (heavy); 3: 1 (cold at threshold 1); 4: none (cold).
    assert dict(got.select("user_id", "segment").iter_rows()) == {1: "light", 2: "heavy", 3: "cold", 4: "cold"}
    assert got["history"].to_list() == [2, 4, 1, 0]


def test_segment_thresholds_must_be_ordered():
    with pytest.raises(ValueError, match="light_max_items"):
        SegmentsConfig(cold_max_items=5, light_max_items=2)


@pytest.mark.parametrize("seed", range(3))
def test_recall_curve_matches_metrics_at_every_k(seed):
    lists, targets = random_lists(seed), random_targets(seed)
    frame = to_frames(lists)["a"]
    curve = A.recall_curve(frame, target_frame(targets), 12)
    assert len(curve) == 12
    for k in range(1, 13):
        assert curve[k - 1] == pytest.approx(metrics(frame, target_frame(targets), [k], 30)[k]["recall"])
    assert np.all(np.diff(curve) >= 0)


@pytest.mark.parametrize("seed", range(3))
def test_paired_difference_matches_numpy(seed):
    lists, targets = random_lists(seed), random_targets(seed)
    frames = to_frames(lists)
    got = A.paired_difference(frames["a"], frames["b"], target_frame(targets), [3, 10])
    for k in (3, 10):
        diffs = [(len(set(lists["a"].get(u, [])[:k]) & w) - len(set(lists["b"].get(u, [])[:k]) & w)) / len(w)
                 for u, w in targets.items()]
        assert got[k]["delta"] == pytest.approx(np.mean(diffs))
        assert got[k]["stderr"] == pytest.approx(np.std(diffs, ddof=1) / math.sqrt(len(diffs)))
        assert got[k]["users"] == len(targets)
