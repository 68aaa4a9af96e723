"""Association channel against a brute-force Python oracle of the documented formula, plus planted structure."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from pydantic import ValidationError

from recall.channels.association import Association, AssociationParams, sum_pairs
from recall.context import TrainData
from recall.io import Dataset, normalise_events
from tests.conftest import random_log


def brute_force_association(rows, p: AssociationParams, now: int) -> dict:
    """The module docstring's formula with plain loops and dicts.

    ``rows`` are ``(user, item, behavior, ts)`` tuples. Returns every row of the
    table, untruncated and best first, ``{item: [(neighbor, score), ...]}``;
    with ``p.normalize`` the scores are divided by the row maximum.
    """
    events = defaultdict(list)
    for u, i, b, ts in rows:
        if b not in p.behaviors or (p.window_days is not None and ts < now - p.window_days * 86400):
            continue
        events[u].append((ts, i))
    sessions_of, length_of = {}, {}
    for u, its in events.items():
        its.sort()
        sessions, last_ts = [], None
        for ts, i in its:
            if last_ts is None or (p.session_gap_hours is not None and ts - last_ts > p.session_gap_hours * 3600):
                sessions.append([])
            if not sessions[-1] or sessions[-1][-1] != i:
                sessions[-1].append(i)
            last_ts = ts
        length = sum(len(s) for s in sessions)
        if length <= p.max_sequence_length:
            sessions_of[u], length_of[u] = sessions, length
    popularity = defaultdict(int)
    for sessions in sessions_of.values():
        for i in {i for s in sessions for i in s}:
            popularity[i] += 1
    a = defaultdict(float)
    for u, sessions in sessions_of.items():
        wu = 1 / math.log(1 + length_of[u]) if p.length_normalize else 1.0
        for s in sessions:
            for pos in range(len(s)):
                for d in range(1, p.window + 1):
                    if pos + d >= len(s) or s[pos] == s[pos + d]:
                        continue
                    w = wu * p.distance_base ** (d - 1)
                    a[s[pos], s[pos + d]] += p.forward_weight * w
                    a[s[pos + d], s[pos]] += p.backward_weight * w
    table = defaultdict(list)
    for (i, j), score in a.items():
        if p.popularity_normalize:
            score = score / (popularity[i] ** p.alpha * popularity[j] ** (1 - p.alpha))
        if score > 0:
            table[i].append((j, score))
    out = {}
    for i, row in table.items():
        row.sort(key=lambda x: (-x[1], x[0]))
        top = row[0][1] if p.normalize else 1.0
        out[i] = [(j, s / top) for j, s in row]
    return out


def as_dict(frame: pl.DataFrame) -> dict:
    out = defaultdict(list)
    for i, j, s, _ in frame.sort("item_id", "rank").iter_rows():
        out[i].append((j, s))
    return dict(out)


def assert_same_table(got: dict, full: dict, top_k: int, rtol: float = 1e-9) -> None:
    """``got`` is the oracle table truncated to ``top_k``, up to float summation order.

    Sums taken in another order may differ in the last bits, which can swap two
    tied neighbours (or pick another of the tied ones at the cut); so each row
    must have the oracle's score at every rank, and each listed neighbour must
    have that score in the oracle.
    """
    assert got.keys() == full.keys()
    for item, row in full.items():
        got_row = got[item]
        assert len(got_row) == min(top_k, len(row)), item
        np.testing.assert_allclose([s for _, s in got_row], [s for _, s in row[:top_k]], rtol=rtol)
        truth = dict(row)
        np.testing.assert_allclose([truth[j] for j, _ in got_row], [s for _, s in got_row], rtol=rtol)


def fitted_table(events: pl.DataFrame, params: AssociationParams) -> tuple[dict, TrainData]:
    train = TrainData.build(Dataset(events))
    return as_dict(Association(params).fit(train).similar_items(train)), train


PARAM_CASES = [
    dict(),
    dict(popularity_normalize=True, normalize=False),
    dict(length_normalize=False, normalize=False, top_k=1000),
    dict(session_gap_hours=6, window=3, distance_base=0.5, top_k=4),
    dict(session_gap_hours=24, popularity_normalize=True, alpha=0.8, forward_weight=0.3, backward_weight=1.2,
         item_block=4),
    dict(behaviors=["click", "buy"], window_days=5, max_sequence_length=8, window=8, top_k=5, position_block=7),
    dict(backward_weight=0.0, normalize=False, length_normalize=False, session_gap_hours=48),
    dict(window=1, popularity_normalize=True, alpha=0.0, normalize=False, item_block=1, position_block=1),
]


@pytest.mark.parametrize("overrides", PARAM_CASES, ids=lambda o: ",".join(o) or "defaults")
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_association_matches_brute_force(overrides, seed):
    events = random_log(seed, n_events=500, n_items=20, days=6)
    params = AssociationParams(**overrides)
    got, train = fitted_table(events, params)
    full = brute_force_association(events.select("user_id", "item_id", "behavior", "ts").iter_rows(),
                                   params, train.now)
    assert_same_table(got, full, params.top_k)


@pytest.mark.parametrize("overrides", [dict(), dict(session_gap_hours=3, normalize=False)])
def test_ties_in_time_match_brute_force(overrides):
    """Events at the same second are ordered by item id (index order), as in the oracle."""
    events = random_log(5, n_events=400, n_items=12, days=2).with_columns(pl.col("ts") // 7200 * 7200)
    params = AssociationParams(**overrides)
    got, train = fitted_table(events, params)
    full = brute_force_association(events.select("user_id", "item_id", "behavior", "ts").iter_rows(),
                                   params, train.now)
    assert_same_table(got, full, params.top_k)


def test_hand_computed_sequence():
    """One user, sequence A B C: every pair and both directions by hand."""
    events = _log([(0, "A", 0), (0, "B", 60), (0, "C", 120)])
    raw = AssociationParams(normalize=False, length_normalize=False)
    got, _ = fitted_table(events, raw)
    assert dict(got[1]) == pytest.approx({2: 1.0, 3: 0.8})        # A -> B (d=1), A -> C (d=2)
    assert dict(got[2]) == pytest.approx({1: 0.7, 3: 1.0})        # B <- A backward, B -> C
    assert dict(got[3]) == pytest.approx({2: 0.7, 1: 0.8 * 0.7})  # C <- B, C <- A (d=2, backward)
    # Length normalisation divides the whole user by log(1 + 3).
    got, _ = fitted_table(events, raw.model_copy(update={"length_normalize": True}))
    assert dict(got[1]) == pytest.approx({2: 1.0 / math.log(4), 3: 0.8 / math.log(4)})


def test_repeats_collapse_and_sessions_cut():
    raw = AssociationParams(normalize=False, length_normalize=False)
    # A A B: the repeat is one position, so A -> B is adjacent (1.0), not 1.0 + 0.8.
    got, _ = fitted_table(_log([(0, "A", 0), (0, "A", 10), (0, "B", 20)]), raw)
    assert dict(got[1]) == pytest.approx({2: 1.0})
    # A, then B two hours later: one pair without sessions, none with a one-hour gap.
    events = _log([(0, "A", 0), (0, "B", 7200)])
    assert fitted_table(events, raw)[0] == {1: [(2, 1.0)], 2: [(1, 0.7)]}
    assert fitted_table(events, raw.model_copy(update={"session_gap_hours": 1.0}))[0] == {}
    # A B A: the two A positions do not pair with each other.
    got, _ = fitted_table(_log([(0, "A", 0), (0, "B", 10), (0, "A", 20)]), raw)
    assert dict(got[1]) == pytest.approx({2: 1.0 + 0.7})


def test_planted_direction_ratio():
    """In every user's sequence A (item 0) comes before B (item 1): a(A,B) / a(B,A) = 1.0 / 0.7."""
    events = _planted_log()
    for params in (AssociationParams(normalize=False, top_k=1000),
                   AssociationParams(popularity_normalize=True, alpha=0.5, normalize=False, top_k=1000)):
        got, _ = fitted_table(events, params)
        ab, ba = dict(got[0])[1], dict(got[1])[0]
        assert ab / ba == pytest.approx(1.0 / 0.7, rel=1e-12)
    # With the defaults, B is A's best neighbour and a user whose one trigger is A gets B first.
    train = TrainData.build(Dataset(events))
    channel = Association().fit(train)
    table = channel.similar_items(train)
    assert table.filter(pl.col("item_id") == 0, pl.col("rank") == 1)["neighbor_id"].item() == 1
    recs = channel.recommend(train, 5)
    assert recs.filter(pl.col("user_id") == 999, pl.col("rank") == 1)["item_id"].item() == 1


@pytest.mark.parametrize("size", [0, 1, 2, 50, 5000])
def test_sum_pairs_equals_scipy_coo(size):
    """The packed-sort aggregation is scipy's COO -> CSR duplicate sum, entry for entry."""
    rng = np.random.default_rng(size)
    n = 40
    rows, cols = rng.integers(0, n, size).astype(np.int32), rng.integers(0, n, size).astype(np.int32)
    weights = rng.random(size)
    got = sum_pairs(rows, cols, weights, n)
    expected = sp.coo_matrix((weights, (rows, cols)), shape=(n, n)).tocsr()
    assert got.has_canonical_format and got.shape == (n, n)
    np.testing.assert_array_equal(got.indptr, expected.indptr)
    np.testing.assert_array_equal(got.indices, expected.indices)
    np.testing.assert_allclose(got.data, expected.data, rtol=1e-12)


def test_params_validation():
    with pytest.raises(ValidationError, match="both 0"):
        AssociationParams(forward_weight=0, backward_weight=0)
    with pytest.raises(ValidationError, match="behaviors"):
        AssociationParams(behaviors=["view"])
    assert AssociationParams(session_gap_hours=float("inf")).session_gap_hours is None


def test_no_engaged_events_gives_empty_table():
    events = _log([(0, "A", 0), (0, "B", 10)], behavior="impression")
    train = TrainData.build(Dataset(events))
    channel = Association().fit(train)
    assert channel.similarity_.nnz == 0
    assert channel.recommend(train, 5).height == 0


# --- helpers ----------------------------------------------------------------------------

ITEM_CODE = {"A": 1, "B": 2, "C": 3}


def _log(rows, behavior: str = "click") -> pl.DataFrame:
    """Events from (user, item letter, seconds) triples; items A, B, C are ids 1, 2, 3."""
    frame = pl.DataFrame({"user_id": [u for u, _, _ in rows], "item_id": [ITEM_CODE[i] for _, i, _ in rows],
                          "behavior": [behavior] * len(rows),
                          "ts": [1_700_000_000 + t for _, _, t in rows]})
    return normalise_events(frame, Path("<hand>"))


def _planted_log() -> pl.DataFrame:
    """80 users: noise, A, 0-2 noise items, B, noise; plus user 999 who only clicked A."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(80):
        noise = [int(x) for x in rng.choice(np.arange(2, 60), 6, replace=False)]
        gap = int(rng.integers(0, 3))
        sequence = noise[:2] + [0] + noise[2:2 + gap] + [1] + noise[2 + gap:]
        rows += [(u, i, "click", 1_700_000_000 + 60 * k + u) for k, i in enumerate(sequence)]
    rows.append((999, 0, "click", 1_700_000_000))
    frame = pl.DataFrame(rows, schema=["user_id", "item_id", "behavior", "ts"], orient="row")
    return normalise_events(frame, Path("<planted>"))
