"""DeepWalk on the session item graph (Perozzi et al., KDD 2014, as used by Wang et al., KDD 2018).

The directed item graph of :func:`recall.graph.item_graph` (edge i -> j weighted by
the number of times j followed i within a session, bots removed) is sampled by
``walks_per_node`` weighted random walks of ``walk_length`` nodes from every item
with an out-edge: the next node is x with probability w(v, x) / sum_y w(v, y)
(:func:`recall.walks.deepwalk_walks`, vectorised over all walkers). The walks
are sentences for skip-gram with negative sampling (gensim); the i2i table is
the cosine between item vectors (faiss) and recall is the shared trigger
expansion or a user vector (:mod:`recall.embedding`).

Walks spread the sparse session co-occurrences over the graph, so items a few
transitions apart, never in one session, still get similar vectors.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from recall.context import TrainData
from recall.embedding import EmbeddingChannel, EmbeddingParams, skipgram
from recall.graph import GraphParams, item_graph
from recall.walks import deepwalk_walks, walks_to_sentences


class DeepWalkParams(EmbeddingParams, GraphParams):
    walks_per_node: int = Field(10, ge=1, description="walks started from every item with an out-edge")
    walk_length: int = Field(20, ge=2, description="items per walk, the start included")


class DeepWalk(EmbeddingChannel):
    name = "deepwalk"
    description = "DeepWalk: weighted random walks on the session item graph, skip-gram, faiss"
    Params = DeepWalkParams

    def walks(self, data: TrainData) -> np.ndarray:
        p = self.params
        return deepwalk_walks(item_graph(data, GraphParams.of(p)), p.walks_per_node, p.walk_length, data.seed)

    def item_vectors(self, data: TrainData) -> tuple[np.ndarray, np.ndarray]:
        return skipgram(walks_to_sentences(self.walks(data)), self.params, data.seed, data.n_items)
