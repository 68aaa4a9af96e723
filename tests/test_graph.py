"""Sessions and the item graph against a plain-Python oracle of the documented construction."""

from __future__ import annotations

from collections import Counter, defaultdict

import networkx as nx
import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from recall.context import TrainData
from recall.graph import GraphParams, graph_stats, item_graph, sessions, to_networkx
from recall.io import Dataset
from tests.conftest import random_log


def brute_force_sessions(train: TrainData, p: GraphParams) -> list[tuple[int, int, int, int]]:
    """(user_idx, session number within the user, item_idx, ts) rows, with plain loops."""
    by_user = defaultdict(list)
    for u, i, b, ts in train.events.select("user_idx", "item_idx", "behavior", "ts").iter_rows():
        if b not in p.behaviors or (p.window_days and ts < train.now - p.window_days * 86400):
            continue
        by_user[u].append((ts, i))
    rows = []
    for u in sorted(by_user):
        events = sorted(by_user[u])
        if len(events) > p.max_user_events:
            continue
        session, last_ts, last_item = -1, None, None
        for ts, i in events:
            if last_ts is None or (p.session_gap_hours is not None and ts - last_ts > p.session_gap_hours * 3600):
                session += 1
                last_item = None
            if i != last_item:
                rows.append((u, session, i, ts))
            last_ts, last_item = ts, i
    return rows


def as_rows(frame: pl.DataFrame) -> list[tuple[int, int, int, int]]:
    """Replace the global session id with the session number within the user."""
    out, first = [], {}
    for u, s, i, ts in frame.select("user_idx", "session", "item_idx", "ts").iter_rows():
        first.setdefault(u, s)
        out.append((u, s - first[u], i, ts))
    return out


CASES = [dict(), dict(session_gap_hours=None), dict(session_gap_hours=24.0, behaviors=["click", "buy"]),
         dict(max_user_events=25, window_days=5.0), dict(session_gap_hours=6.0)]


def train_of(seed: int, **kw) -> TrainData:
    # Events within ~2 days so sessions of an hour or a few hours have several items.
    return TrainData.build(Dataset(random_log(seed, n_events=kw.get("n_events", 400), n_users=10, n_items=12,
                                              days=kw.get("days", 2))))


@pytest.mark.parametrize("overrides", CASES)
@pytest.mark.parametrize("seed", [1, 2])
def test_sessions_match_brute_force(overrides, seed):
    train = train_of(seed, days=10 if "window_days" in overrides else 2)
    p = GraphParams(**overrides)
    got = sessions(train, p)
    assert got.columns == ["user_idx", "session", "item_idx", "ts"]
    assert as_rows(got) == brute_force_sessions(train, p)
    # Session ids are global, increasing, and never shared between users.
    s = got["session"].to_numpy()
    assert (np.diff(s) >= 0).all()
    assert got.group_by("session").agg(pl.col("user_idx").n_unique())["user_idx"].max() == 1


def test_bots_are_dropped():
    train = train_of(3)
    counts = train.engaged().group_by("user_idx").len()
    limit = int(counts["len"].median())
    got = sessions(train, GraphParams(max_user_events=limit))
    bots = set(counts.filter(pl.col("len") > limit)["user_idx"].to_list())
    assert bots and not bots & set(got["user_idx"].to_list())


@pytest.mark.parametrize("overrides", CASES)
def test_item_graph_counts_transitions(overrides):
    train = train_of(4)
    p = GraphParams(**overrides)
    graph = item_graph(train, p)
    expected = Counter()
    rows = brute_force_sessions(train, p)
    for (u1, s1, i1, _), (u2, s2, i2, _) in zip(rows, rows[1:]):
        if (u1, s1) == (u2, s2):
            expected[i1, i2] += 1
    assert graph.shape == (train.n_items, train.n_items) and graph.dtype == np.float64
    assert graph.has_sorted_indices and graph.has_canonical_format
    coo = graph.tocoo()
    assert dict(zip(zip(coo.row.tolist(), coo.col.tolist()), coo.data.tolist())) == dict(expected)
    assert graph.diagonal().sum() == 0  # repeats are collapsed, so no self-loops


def test_graph_is_directed():
    events = pl.DataFrame({"user_id": [1, 1, 2, 2, 3, 3], "item_id": [10, 20, 10, 20, 20, 30],
                           "behavior": ["click"] * 6, "ts": [0, 60, 0, 60, 0, 60]})
    from recall.io import normalise_events

    train = TrainData.build(Dataset(normalise_events(events.with_columns(pl.col("ts") + 1_700_000_000),
                                                     "<directed>")))
    dense = item_graph(train, GraphParams()).toarray()
    np.testing.assert_array_equal(dense, [[0, 2, 0], [0, 0, 1], [0, 0, 0]])


def test_stats_and_networkx_agree():
    rng = np.random.default_rng(0)
    n = 60
    rows, cols = rng.integers(0, 40, 120), rng.integers(0, 40, 120)  # items 40..59 have no edges
    keep = rows != cols
    graph = sp.csr_matrix((rng.integers(1, 5, keep.sum()).astype(float), (rows[keep], cols[keep])), shape=(n, n))
    stats = graph_stats(graph)
    g = to_networkx(graph, pl.Series("item_id", np.arange(n) * 10))
    assert stats["nodes"] == g.number_of_nodes() and stats["edges"] == g.number_of_edges()
    assert stats["weakly_connected"] == nx.number_weakly_connected_components(g)
    assert stats["strongly_connected"] == nx.number_strongly_connected_components(g)
    assert stats["largest_weak_component"] == max(len(c) for c in nx.weakly_connected_components(g))
    assert stats["dead_ends"] == sum(1 for v in g if g.out_degree(v) == 0)
    assert stats["density"] == pytest.approx(nx.density(g))
    u, v = int(rows[keep][0]), int(cols[keep][0])
    assert g[u * 10][v * 10]["weight"] == graph[u, v]


def test_describe_and_graphml_export_agree_with_networkx(tmp_path):
    import networkx as nx

    from recall.graph import describe, export_graphml

    rng = np.random.default_rng(4)
    n = 12
    graph = sp.csr_matrix((rng.random((n, n)) < 0.25) * rng.integers(1, 5, (n, n)).astype(float))
    graph.setdiag(0)
    graph.eliminate_zeros()
    ids = pl.Series("item_id", np.arange(n) * 10)
    stats = describe(graph, ids, top=3)
    reference = nx.DiGraph()
    coo = graph.tocoo()
    reference.add_weighted_edges_from((int(i) * 10, int(j) * 10, float(w)) for i, j, w in zip(coo.row, coo.col, coo.data))
    rank = nx.pagerank(reference, weight="weight")
    assert [r["item_id"] for r in stats["pagerank_top"]] == sorted(rank, key=lambda k: (-rank[k], k))[:3]
    assert stats["reciprocity"] == pytest.approx(nx.reciprocity(reference))
    back = nx.read_graphml(export_graphml(graph, ids, tmp_path / "g.graphml"), node_type=int)
    assert {(u, v): d["weight"] for u, v, d in back.edges(data=True)} == \
        {(u, v): d["weight"] for u, v, d in reference.edges(data=True)}
