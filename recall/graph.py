"""Sessions and the directed item graph that the graph-embedding channels walk on.

The construction of Wang et al. (KDD 2018, "Billion-scale Commodity Embedding for
E-commerce Recommendation in Alibaba", section 2.1), shared by DeepWalk, Node2Vec
and EGES:

1. each user's engaged events (the configured ``behaviors``, optionally only the
   last ``window_days``) in time order are cut into **sessions** wherever two
   consecutive events are more than ``session_gap_hours`` apart (1 hour in the
   paper): items far apart in time are weakly related;
2. users with more than ``max_user_events`` such events are dropped as bots or
   crawlers (the paper removes over-active users);
3. within a session, consecutive repeats of one item (click, then cart, of the
   same item) are one position;
4. every consecutive pair ``(s_p, s_{p+1})`` of a session is a **directed edge**
   i -> j, weighted by how many times that transition occurs over all users:

       W(i, j) = #{(u, session, p): s_p = i, s_{p+1} = j}

The graph is a scipy CSR matrix (rows: source item, columns: target item,
float64 weights, sorted column indices, no self-loops because repeats are
collapsed). Everything is vectorised over one flat array of events; networkx is
used only by :func:`graph_stats` and :func:`to_networkx`, off the hot path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from recall import schema as S
from recall.interface import BehaviorList, Span
from recall.context import IIDX, UIDX, TrainData
from recall.sessions import split_sessions

SESSION = "session"


class GraphParams(BaseModel):
    """How sessions and the item graph are built from the event log."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    behaviors: BehaviorList = Field(default_factory=lambda: ["click", "fav", "cart", "buy"],
                                    description="behaviours whose items form the sessions")
    session_gap_hours: Span = Field(1.0, gt=0, description="cut a session where consecutive events are more "
                                                           "than this apart (EGES: 1 hour; inf: no cut)")
    max_user_events: int = Field(5000, ge=2, description="users with more events (of these behaviours, in the "
                                                          "window) are dropped as bots")
    window_days: Span = Field(None, gt=0, description="only the last N days of training data (inf: all)")

    @classmethod
    def of(cls, params: BaseModel) -> "GraphParams":
        """The graph fields of a larger params model (a channel's), by name."""
        return cls(**{name: getattr(params, name) for name in cls.model_fields})


def sessions(data: TrainData, p: GraphParams) -> pl.DataFrame:
    """The session sequences: ``user_idx, session, item_idx, ts`` sorted by user and time.

    ``session`` is a running id (Int64) over all users, unique per (user, session),
    increasing along the table, so rows of one session are contiguous. Consecutive
    repeats of one item within a session are one row, stamped with the first
    event's time. Bots (more than ``max_user_events`` events) are left out.
    """
    # Project before filtering: the filter then gathers 4 columns, not all of them.
    events = data.events.select(UIDX, IIDX, S.TS, S.BEHAVIOR).filter(pl.col(S.BEHAVIOR).is_in(p.behaviors))
    if p.window_days is not None:
        events = events.filter(pl.col(S.TS) >= data.now - p.window_days * 86400)
    events = (events.select(UIDX, IIDX, S.TS)
              .filter(pl.len().over(UIDX) <= p.max_user_events)
              # Ties in time are ordered by item so the sequence does not depend on row order.
              .sort(UIDX, S.TS, IIDX))
    user = events[UIDX].to_numpy()
    item = events[IIDX].to_numpy()
    ts = events[S.TS].to_numpy()
    session, keep = split_sessions(user, item, ts, p.session_gap_hours)
    return pl.DataFrame({UIDX: user[keep], SESSION: session[keep], IIDX: item[keep], S.TS: ts[keep]},
                        schema={UIDX: events.schema[UIDX], SESSION: pl.Int64, IIDX: events.schema[IIDX],
                                S.TS: events.schema[S.TS]})


def transitions(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The (source, target) item of every consecutive pair inside one session of a :func:`sessions` table."""
    item = frame[IIDX].to_numpy().astype(np.int64)
    session = frame[SESSION].to_numpy()
    same = session[1:] == session[:-1]
    return item[:-1][same], item[1:][same]


def item_graph(data: TrainData, p: GraphParams) -> sp.csr_matrix:
    """The n_items x n_items directed transition graph: W[i, j] = count of i -> j in sessions.

    float64 weights, canonical CSR (sorted column indices, duplicates summed).
    Items never seen in a session have empty rows and columns.
    """
    source, target = transitions(sessions(data, p))
    return graph_from_edges(source, target, np.ones(source.size), data.n_items)


def graph_from_edges(source: np.ndarray, target: np.ndarray, weight: np.ndarray, n: int) -> sp.csr_matrix:
    """Canonical n x n CSR graph summing ``weight`` over duplicate (source, target) edges."""
    graph = sp.csr_matrix((np.asarray(weight, dtype=np.float64), (source, target)), shape=(n, n))
    graph.sum_duplicates()  # also sorts each row's column indices
    graph.eliminate_zeros()
    return graph


def graph_stats(graph: sp.csr_matrix) -> dict:
    """Summary of a directed item graph, for logs and the benchmark.

    ``nodes``: items with at least one in- or out-edge; ``edges``: distinct directed
    edges; ``density``: edges / (nodes * (nodes - 1)); ``weakly_connected`` /
    ``strongly_connected``: component counts among those nodes (scipy's csgraph,
    linear time); ``largest_weak_component``: its node count; ``mean_out_degree`` and
    ``max_out_degree`` over nodes; ``dead_ends``: nodes without out-edges (walks stop there).
    """
    from scipy.sparse.csgraph import connected_components

    graph = sp.csr_matrix(graph)
    out_degree = np.diff(graph.indptr)
    in_degree = np.bincount(graph.indices, minlength=graph.shape[0])
    active = (out_degree > 0) | (in_degree > 0)
    nodes = int(active.sum())
    edges = int(graph.nnz)
    stats = {"nodes": nodes, "edges": edges, "total_weight": float(graph.data.sum()),
             "density": edges / (nodes * (nodes - 1)) if nodes > 1 else 0.0,
             "mean_out_degree": edges / nodes if nodes else 0.0,
             "max_out_degree": int(out_degree.max()) if out_degree.size else 0,
             "dead_ends": int((active & (out_degree == 0)).sum())}
    if nodes:
        sub = graph[active][:, active]
        n_weak, weak = connected_components(sub, directed=True, connection="weak")
        n_strong, _ = connected_components(sub, directed=True, connection="strong")
        stats.update(weakly_connected=int(n_weak), strongly_connected=int(n_strong),
                     largest_weak_component=int(np.bincount(weak).max()))
    else:
        stats.update(weakly_connected=0, strongly_connected=0, largest_weak_component=0)
    return stats


def to_networkx(graph: sp.csr_matrix, item_ids: pl.Series | None = None):
    """The graph as a ``networkx.DiGraph`` (edge attribute ``weight``), nodes labelled by item id.

    Only items with an edge become nodes. For inspection and export (e.g.
    ``networkx.write_graphml``), not for walking: networkx holds a dict per edge.
    """
    import networkx as nx

    coo = sp.coo_matrix(graph)
    labels = (np.arange(graph.shape[0]) if item_ids is None else item_ids.to_numpy()).tolist()
    out = nx.DiGraph()
    out.add_weighted_edges_from(zip((labels[i] for i in coo.row.tolist()),
                                    (labels[j] for j in coo.col.tolist()), coo.data.tolist()))
    return out


def describe(graph: sp.csr_matrix, item_ids: pl.Series, top: int = 10) -> dict:
    """:func:`graph_stats` plus what networkx does well on the item graph: reciprocity (share of
    edges whose reverse exists: how symmetric browsing is) and the most central items by PageRank."""
    import networkx as nx

    stats = graph_stats(graph)
    g = to_networkx(graph, item_ids)
    stats["reciprocity"] = float(nx.reciprocity(g)) if g.number_of_edges() else 0.0
    rank = nx.pagerank(g, weight="weight") if g.number_of_nodes() else {}
    stats["pagerank_top"] = [{"item_id": item, "pagerank": round(float(value), 6)}
                             for item, value in sorted(rank.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]
    return stats


def export_graphml(graph: sp.csr_matrix, item_ids: pl.Series, path: str | Path) -> Path:
    """Write the item graph as GraphML (nodes: item ids; edges: transition counts as ``weight``)."""
    import networkx as nx

    path = Path(path)
    if path.parent != Path(""):
        path.parent.mkdir(parents=True, exist_ok=True)
    nx.write_graphml(to_networkx(graph, item_ids), path)
    return path


__all__ = ["GraphParams", "SESSION", "describe", "export_graphml", "graph_from_edges", "graph_stats", "item_graph",
           "sessions", "to_networkx", "transitions"]
