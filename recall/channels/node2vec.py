"""Node2Vec on the session item graph (Grover & Leskovec, KDD 2016).

As :mod:`recall.channels.deepwalk`, but the walks are second order: having come
from t to v, the next item x has probability proportional to

    w(v, x) * (1/p if x == t;  1 if t has an edge to x;  1/q otherwise)

(:func:`recall.walks.node2vec_walks`, exact, by vectorised rejection sampling).
A small ``p`` makes walks return often; ``q > 1`` keeps them near the previous
item (BFS-like: structurally similar items), ``q < 1`` sends them outward
(DFS-like: items of one community, homophily). ``p = q = 1`` is DeepWalk.
"""

from __future__ import annotations

from pydantic import Field

from recall.channels.deepwalk import DeepWalk, DeepWalkParams
from recall.context import TrainData
from recall.corpus import WalkCorpus, WalkParams, walk_corpus
from recall.graph import GraphParams


class Node2VecParams(DeepWalkParams):
    p: float = Field(0.5, gt=0, description="return parameter: bias 1/p of stepping back to the previous item")
    q: float = Field(2.0, gt=0, description="in-out parameter: bias 1/q of stepping to an item the previous "
                                            "item has no edge to")


class Node2Vec(DeepWalk):
    name = "node2vec"
    description = "Node2Vec: p/q-biased second-order walks on the session item graph, skip-gram, faiss"
    Params = Node2VecParams

    def corpus(self, data: TrainData) -> WalkCorpus:
        p = self.params
        return walk_corpus(data, GraphParams.of(p), WalkParams(**{name: getattr(p, name)
                                                                  for name in WalkParams.model_fields}),
                           node2vec=(p.p, p.q))
