"""Item2Vec: skip-gram with negative sampling over users' item sequences (Barkan & Koenigstein, 2016).

Each session of :func:`recall.graph.sessions` (a user's engaged items in time
order, consecutive repeats collapsed, cut where events are more than
``session_gap_hours`` apart; by default not cut, so a sentence is the user's
whole sequence, as in Item2Vec) is a sentence; word2vec's skip-gram
(gensim, ``sg = 1``) learns a vector v_i per item so that

    log sigma(v_i . c_j) + sum_{n ~ P_neg} log sigma(-v_i . c_n)

is large for items j within ``window`` positions of i in a sentence, with
``negative`` items drawn from P_neg(n) ~ frequency(n)^ns_exponent. The i2i table
is the cosine between the v_i (faiss, :mod:`recall.embedding`); recall is the
shared trigger expansion, or a user vector searched directly.

Item2Vec proper treats a user's set as a sentence with an unbounded window;
``window`` bounds it, so the time order matters (a larger window moves towards
the set version).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from recall.context import IIDX, TrainData
from recall.embedding import EmbeddingChannel, EmbeddingParams, skipgram
from recall.graph import SESSION, GraphParams, sessions
from recall.interface import Span


class Item2VecParams(EmbeddingParams, GraphParams):
    session_gap_hours: Span = Field(None, gt=0, description="cut a user's sequence where consecutive events "
                                                            "are more than this apart (inf: one sentence per user)")


def session_sentences(data: TrainData, p: GraphParams) -> list[list[int]]:
    """Every session as a list of item indices (sessions of one item are kept: gensim skips them)."""
    frame = sessions(data, p)
    if frame.height == 0:
        return []
    items = frame[IIDX].to_list()
    session = frame[SESSION].to_numpy()
    bounds = np.flatnonzero(np.r_[True, session[1:] != session[:-1], True]).tolist()
    # The one loop over sentences is gensim's input format: a list per sentence.
    return [items[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


class Item2Vec(EmbeddingChannel):
    name = "item2vec"
    description = "Item2Vec: skip-gram over session item sequences, faiss nearest neighbours"
    Params = Item2VecParams
    fit_cost = 1

    def item_vectors(self, data: TrainData) -> tuple[np.ndarray, np.ndarray]:
        p = self.params
        return skipgram(session_sentences(data, GraphParams.of(p)), p, data.seed, data.n_items)
