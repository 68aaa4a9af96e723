"""EGES: graph embedding enhanced with side information (Wang et al., KDD 2018).

"Billion-scale Commodity Embedding for E-commerce Recommendation in Alibaba",
section 2.4. Each item v has ``n + 1`` embeddings: its ID embedding ``W_0(v)``
and one per side-information field, ``W_j(v)`` = the embedding of v's value in
field j (category, brand, price bucket, ...). The item's vector is

    H_v = sum_{j=0..n} softmax(a_v)_j * W_j(v)

with per-item attention logits ``a_v`` (an ``n_items x (n + 1)`` matrix, learned
jointly; zero at the start, i.e. equal weights). Training is skip-gram with
negative sampling on the random walks of the session item graph
(:mod:`recall.graph`, :mod:`recall.walks`): for a centre v and a context u
within ``window`` positions of one walk,

    loss(v, u) = -log sigma(H_v . Z_u) - sum_{k=1..K} log sigma(-H_v . Z_{n_k})

where ``Z`` is a separate output (context) embedding table over item IDs, as in
the paper, and the K = ``negative`` negatives n_k are drawn from the unigram
distribution of the walks raised to ``ns_exponent`` (0.75). The retrieval
vectors are the L2-normalised ``H_v``; :class:`recall.embedding.EmbeddingChannel`
turns them into the i2i table and user candidates.

Side information: every column of the items table except ``item_id`` (or the
listed ``side_columns``). Categorical columns (strings, booleans, integer ids
such as ``category_id``, integers with at most ``numeric_buckets`` distinct
values) embed each value; numeric columns (floats, other integers such as a
release year, dates) are cut into ``numeric_buckets`` quantile buckets; list
columns (e.g. MovieLens ``genres``) are a multi-valued field whose embedding is
the mean of its values' embeddings. A missing value (null, NaN, empty list) is
a dedicated "unknown" value of the field, learned like any other. Text columns
that are (nearly) unique per item, such as titles, are identifiers rather than
side information and are left out unless listed in ``side_columns``.

Cold-start items (in the items table but never on a walk, so their ID
embedding and attention logits were never trained) get a vector from side
information alone. With ``cold_weights = "mean"`` (the paper's treatment of
cold-start items: the average of the item's side-information embeddings) it is
the plain mean of their side-field embeddings; with ``"attention"`` each field
is weighted by its attention averaged over the trained items, renormalised
without the ID. Cold items are then indexed with the others, so they get
neighbours and are recalled by users whose triggers resemble them. Items with
neither walks nor any known side value get no vector. Items seen fewer than
``min_count`` times on the walks are treated as cold.

**GES** (the paper's "graph embedding with side information" baseline) is the
same model with equal, fixed weights ``1 / (n + 1)``: registered as ``ges``, it
is this class with ``attention = false``.

Skip-gram details follow word2vec (and gensim, so EGES and ``deepwalk`` train on
the same footing): each centre's window is drawn from ``1 .. window``
(``shrink_window``), frequent items are down-sampled (``sample``), and the
learning rate decays linearly from ``learning_rate`` to ``min_learning_rate``.
With the same graph and walk settings and seed, EGES walks are exactly the
``deepwalk`` channel's walks.

Implementation (:mod:`recall.channels.eges_train` on :mod:`recall.sgns`, the
batched trainer DeepWalk and Node2Vec use too): PyTorch on CPU with
hand-written gradients, no autograd. A batch is a set of centre positions of
the walks with all their contexts, so ``H_v`` is computed once per centre for
all its pairs; the centres of a batch share ``shared_negatives`` negatives,
weighted so the expected loss is that of ``negative`` negatives per pair, and
their scores are one matmul; the value and attention tables are updated by a
lazy Adam on the touched rows (SparseAdam's update), the context table by
word2vec's SGD step; a producer thread cuts, down-samples and windows the walks
with numpy while torch trains. The autograd trainer it replaced is kept as the tests' oracle
(``tests/eges_reference.py``). Training is reproducible under a seed with
``workers = 1``; more workers are Hogwild trainer threads, whose updates land
in an order that varies run to run.

Measured (BENCHMARKS.md, issue 15; idle machine, 20,000 walks of the 5M-event log,
side by side): 674,000 pairs/s on one torch thread, 3.2x the trainer with Adam on
every table, which itself was 2.7-5.4x the autograd trainer.
"""


from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
from pydantic import Field

from recall.channels.deepwalk import DeepWalkParams
from recall.channels.eges_train import EGESTables, TrainResult, final_vectors, train
from recall.channels.side_info import (SideInfo, column_kind, dense_codes, field_tokens, quantile_codes,
                                       select_side_columns, side_info)
from recall.context import TrainData
from recall.corpus import WalkParams, walk_corpus
from recall.embedding import EmbeddingChannel, normalise_rows
from recall.graph import GraphParams

ID_FIELD = "item_id"

# --------------------------------------------------------------------------------------
# Parameters and the channels
# --------------------------------------------------------------------------------------


class EGESParams(DeepWalkParams):
    """EGES settings: the session graph and DeepWalk walks, skip-gram, side information, faiss."""

    # 64, not DeepWalk's 32: at 32 EGES lost validation recall on ml-100k (0.206 vs 0.219) and
    # taobao-84k (0.0067 vs 0.0105) (BENCHMARKS.md).
    dim: int = Field(64, ge=2, description="vector dimension (the ID and every side-value embedding)")
    # Window 4, 4 epochs at Adam 0.05 against 5, 5 at 0.04, on the validation windows: Recall@200
    # 0.2188 vs 0.2107 (ml-100k), 0.3703 vs 0.3683 (sample), 0.0090 vs 0.0092 (taobao-84k, a
    # handful of hits) in two thirds of the pairs (BENCHMARKS.md, issue 15, ninth pass).
    window: int = Field(4, ge=1, description="skip-gram context window (positions each side)")
    epochs: int = Field(4, ge=1, description="passes over the walks")
    learning_rate: float = Field(0.05, gt=0, description="initial Adam learning rate of the ID and side-value "
                                                          "embeddings and the attention, decayed linearly to "
                                                          "min_learning_rate")
    context_learning_rate: float = Field(0.1, gt=0, description="initial SGD step of the context table "
                                                                 "(word2vec's output layer), decayed in proportion")
    min_learning_rate: float = Field(1e-4, gt=0, description="final Adam learning rate")
    workers: int = Field(1, ge=1, description="trainer threads updating the tables without locks (Hogwild, as "
                                              "word2vec's workers); only 1 is bit-reproducible")
    attention: bool = Field(True, description="learn per-item attention over the fields (EGES); false: equal "
                                              "fixed weights (GES)")
    # 128 shared by the ~1,000 centres of a 4096-pair batch: one matmul. Against 256, Recall@200 is
    # level within noise on validation and test windows of ml-100k, the sample and taobao-84k, at
    # 13-20% less fit time; 64 lost recall on ml-100k (BENCHMARKS.md, issue 15).
    shared_negatives: int = Field(128, ge=1, description="negatives shared by the centres of a batch (each weighs "
                                                         "negative / shared_negatives per pair)")
    trainer: Literal["batched"] = Field("batched", description="EGES always trains with its own batched "
                                                               "trainer (recall.channels.eges_train)")
    cold_weights: Literal["mean", "attention"] = Field(
        "mean", description="cold items: mean of their side-field embeddings (the paper), or fields weighted "
                            "by the mean attention of trained items")
    side_columns: list[str] | None = Field(None, description="items columns used as side information; unset: "
                                                             "all but item_id and identifier-like text")
    exclude_columns: list[str] = Field(default_factory=list, description="items columns never used")
    categorical_columns: list[str] = Field(default_factory=list,
                                           description="numeric columns embedded per value rather than bucketed")
    numeric_buckets: int = Field(10, ge=1, description="quantile buckets of numeric columns")
    max_distinct_share: float = Field(0.5, gt=0, le=1, description="text columns with more distinct values than "
                                                                   "this share of items are skipped (titles)")


class GESParams(EGESParams):
    attention: bool = Field(False, description="learn per-item attention over the fields (EGES); false: equal "
                                               "fixed weights (GES)")


class EGES(EmbeddingChannel):
    """EGES on the session item graph; learned state adds ``side_``, ``weights_``, ``trained_``,
    ``losses_``, ``pairs_`` and ``train_seconds_`` to the :class:`EmbeddingChannel` attributes."""

    name = "eges"
    description = "EGES: item ID + side-info embeddings under per-item attention, skip-gram on graph walks"
    fit_cost = 3
    Params = EGESParams

    def walks(self, data: TrainData) -> np.ndarray:
        """DeepWalk walks on the session graph: the ``deepwalk`` channel's corpus itself with equal settings."""
        p = self.params
        return walk_corpus(data, GraphParams.of(p), WalkParams(**{name: getattr(p, name)
                                                                  for name in WalkParams.model_fields})).walks

    def item_vectors(self, data: TrainData) -> tuple[np.ndarray, np.ndarray]:
        p = self.params
        side = side_info(data.item_ids, data.items, p)
        if side.n_fields == 0:
            warnings.warn(f"channel {self.name}: no side information (no items table or no usable columns); "
                          "it learns ID embeddings only and cold items get no vector", stacklevel=2)
        result = train(self.walks(data), side, p, data.seed)
        vectors, mask, weights = final_vectors(result, side, p.cold_weights)
        self.side_, self.weights_, self.trained_ = side, weights, result.trained
        self.losses_, self.pairs_, self.train_seconds_ = result.losses, result.pairs, result.seconds
        return normalise_rows(vectors), mask

    def field_attention(self) -> dict[str, float]:
        """Mean attention weight of the ID and each side field over the trained items."""
        names = [ID_FIELD, *self.side_.fields]
        if not self.trained_.any():
            return dict.fromkeys(names, 0.0)
        return dict(zip(names, self.weights_[self.trained_].astype(np.float64).mean(axis=0).round(4).tolist()))


class GES(EGES):
    name = "ges"
    description = "GES: EGES with equal fixed weights over the ID and side-info embeddings (no attention)"
    Params = GESParams


__all__ = ["EGES", "EGESParams", "EGESTables", "GES", "GESParams", "SideInfo", "TrainResult", "column_kind",
           "dense_codes", "field_tokens", "final_vectors", "quantile_codes", "select_side_columns", "side_info",
           "train"]
