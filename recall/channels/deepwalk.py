"""DeepWalk on the session item graph (Perozzi et al., KDD 2014, as used by Wang et al., KDD 2018).

The directed item graph of :func:`recall.graph.item_graph` (edge i -> j weighted by
the number of times j followed i within a session, bots removed) is sampled by
weighted random walks of ``walk_length`` nodes: the next node is x with
probability w(v, x) / sum_y w(v, y) (:func:`recall.walks.deepwalk_walks`,
vectorised over all walkers). The walks start from items in proportion to
their out-strength, ``walks_per_transition`` per session transition, so the
corpus grows with the events, not the catalogue (:mod:`recall.corpus`); an
item on no walk but with edges gets the weighted mean of its neighbours'
vectors. The walks are sentences for skip-gram with negative sampling, trained
by the batched trainer of :mod:`recall.sgns` (``trainer = "batched"``) or by
gensim's Word2Vec (``"gensim"``); the i2i table is the cosine between item vectors (faiss) and recall
is the shared trigger expansion or a user vector (:mod:`recall.embedding`).

Walks spread the sparse session co-occurrences over the graph, so items a few
transitions apart, never in one session, still get similar vectors.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from recall.context import TrainData
from recall.corpus import WalkCorpus, WalkParams, neighbour_fill, walk_corpus
from recall.embedding import EmbeddingChannel, EmbeddingParams, normalise_rows, skipgram
from recall.graph import GraphParams
from recall.sgns import BatchParams, train_vectors
from recall.walks import walks_to_sentences


class DeepWalkParams(EmbeddingParams, GraphParams, WalkParams, BatchParams):
    # 32, not the embeddings' 64: on pooled validation windows Recall@200 0.159 vs 0.140 (ml-100k),
    # 0.327 vs 0.333 (sample), 0.0031 vs 0.0035 (taobao-84k, about one hit) and Node2Vec 0.148 vs
    # 0.134, 0.328 vs 0.322, 0.0028 vs 0.0035, at about half of gensim's work per pair (BENCHMARKS.md).
    dim: int = Field(32, ge=2, description="vector dimension")
    # Batched: 3-4x gensim's tokens/s on one thread, and Recall@200 level or higher on the sample,
    # ml-100k and taobao-84k, validation and test windows (BENCHMARKS.md, issue 15).
    trainer: Literal["batched", "gensim"] = Field(
        "batched", description="skip-gram trainer: recall.sgns (centre-major batches, shared negatives) or "
                               "gensim's Word2Vec (its C loop, one pair at a time)")


class DeepWalk(EmbeddingChannel):
    name = "deepwalk"
    description = "DeepWalk: weighted random walks on the session item graph, skip-gram, faiss"
    Params = DeepWalkParams
    fit_cost = 2

    def corpus(self, data: TrainData) -> WalkCorpus:
        """The shared walk corpus (:func:`recall.corpus.walk_corpus`) of this channel's settings."""
        return walk_corpus(data, GraphParams.of(self.params), WalkParams(**{
            name: getattr(self.params, name) for name in WalkParams.model_fields}))

    def walks(self, data: TrainData) -> np.ndarray:
        return self.corpus(data).walks

    def item_vectors(self, data: TrainData) -> tuple[np.ndarray, np.ndarray]:
        corpus = self.corpus(data)
        if self.params.trainer == "gensim":
            vectors, mask = skipgram(walks_to_sentences(corpus.walks), self.params, data.seed, data.n_items)
        else:
            result = train_vectors(corpus.walks, data.n_items, self.params, data.seed)
            vectors, mask = normalise_rows(result.vectors), result.trained
            self.losses_, self.pairs_, self.train_seconds_ = result.losses, result.pairs, result.seconds
        return neighbour_fill(corpus.graph, vectors, mask)
