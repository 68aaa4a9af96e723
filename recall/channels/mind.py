"""MIND: Multi-Interest Network with Dynamic routing (Li et al., CIKM 2019), the Tmall homepage's vector recall.

The item tower, the user attributes, the training targets, the histories and the
sampled softmax are those of :mod:`recall.channels.youtubednn`; MIND replaces the
single pooled user vector by K interest vectors.

**Multi-interest extractor (behaviour-to-interest routing).** A user's history
item vectors e_i (i = 1..L, the same trigger window and weights as
``youtubednn``) are mapped by one shared bilinear matrix S to ê_i = S e_i. The
routing logits b_ji (interest j, behaviour i) start from a fixed Gaussian draw
(seeded, part of the model, so serving is deterministic) and for
``routing_iterations`` rounds:

    w_ji = softmax_j(b_ji) * r_i          (r_i: the behaviour's trigger weight / the user's largest)
    z_j  = sum_i w_ji ê_i,   u_j = squash(z_j) = |z_j|^2 / (1 + |z_j|^2) * z_j / |z_j|
    b_ji <- b_ji + u_j . ê_i              (not differentiated through, as in the capsule papers)

Only the first K_u capsules take part: K_u = max(1, min(K_max, floor(log2 |I_u|)))
with |I_u| the number of history items (the paper's adaptive number of
interests); the softmax over j is restricted to them. Each capsule, concatenated
with the user-attribute embeddings, goes through the user MLP (with ``residual``,
added to the capsule) to give the interest vectors v_j.

**Label-aware attention (training).** For a target item t, the user vector is
``sum_j softmax_j(pow * s_j) v_j`` with s_j the score of interest j for t
(cosine / temperature; inner product with ``normalize = false``). The paper
writes ``softmax(pow(V^T e_t, p))``; the scaled form is used here because a
power of a negative cosine loses its sign; both give uniform attention at
p = 0 and hard attention (the best interest) as p grows. The sampled softmax
of ``youtubednn`` (in-batch or log-uniform negatives, logQ correction) trains
the whole network.

**Serving.** Each of a user's K_u interest vectors is searched separately in
the faiss inner-product index of item vectors (seen items and scores <= 0
dropped). The lists are merged with an equal per-interest share: items are
taken in order of their rank within the interest that found them (interest
lists interleaved, so each of the K_u interests gets about n / K_u of the n
slots), an item found by several interests counting at its best rank; ties go
to the higher similarity. The candidate's ``score`` is ``1 / rank`` within that
interest (1, 1/2, 1/3, ...), so it falls with the merged rank.
"""

from __future__ import annotations

import time

import numpy as np
import polars as pl
from pydantic import Field

from recall import schema as S
from recall.channels.youtubednn import (LearnedChannel, TwoTowerParams, adaptive_interests, build_towers,
                                        final_item_vectors, serving_inputs, train_model)
from recall.context import TrainData
from recall.embedding import VectorIndex, normalise_rows
from recall.interface import empty_candidates
from recall.sparse import chunk_rows, row_blocks


class MINDParams(TwoTowerParams):
    """MIND settings: the two-tower settings plus the interest capsules."""

    max_interests: int = Field(4, ge=1, description="K_max: interests per user (K_u adapts to history length)")
    routing_iterations: int = Field(3, ge=1, description="dynamic-routing iterations")
    attention_power: float = Field(2.0, ge=0, description="label-aware attention sharpness p (0: uniform)")
    weighted_routing: bool = Field(True, description="weight each behaviour's routing by its trigger weight")


def build_mind(side, attrs, p: MINDParams, seed: int):
    """The towers plus the shared bilinear map and the fixed initial routing logits."""
    import torch

    towers = build_towers(side, attrs, p, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    towers.bilinear = torch.nn.Parameter(torch.randn(p.dim, p.dim, generator=generator) / p.dim ** 0.5)
    towers.register_buffer("routing", torch.randn(p.max_interests, p.max_history, generator=generator))
    return towers


def squash(z, eps: float = 1e-9):
    norm2 = (z * z).sum(-1, keepdim=True)
    return norm2 / (1.0 + norm2) * z / (norm2 + eps).sqrt()


def interests(model, p: MINDParams, users, hist, weights):
    """Interest vectors (batch x K_max x dim; inactive ones zero) and K_u per user."""
    import torch

    valid = weights > 0
    k_u = adaptive_interests(valid.sum(1), p.max_interests)
    active = torch.arange(p.max_interests)[None, :] < k_u[:, None]                 # B x K
    mapped = hist @ model.bilinear.T                                                # B x L x d
    if p.weighted_routing:
        strength = weights / weights.max(1, keepdim=True).values.clamp(min=1e-12)
    else:
        strength = valid.float()
    logits = model.routing[:, :hist.shape[1]].unsqueeze(0).expand(hist.shape[0], -1, -1)   # B x K x L
    for it in range(p.routing_iterations):
        coupling = torch.softmax(logits.masked_fill(~active.unsqueeze(-1), float("-inf")), dim=1)
        capsules = squash((coupling * strength.unsqueeze(1)) @ mapped)              # B x K x d
        if it + 1 < p.routing_iterations:
            logits = logits + (capsules @ mapped.transpose(1, 2)).detach()
    features = model.user_features(users)
    features = features.unsqueeze(1).expand(-1, p.max_interests, -1)
    vectors = model.head(capsules, features)
    return vectors * active.unsqueeze(-1), k_u


def label_aware(p: MINDParams, vectors, k_u, targets):
    """sum_j softmax_j(p * s_j) v_j over the active interests, s_j the interest's score for the target."""
    import torch

    if p.normalize:
        scores = (torch.nn.functional.normalize(vectors, dim=-1)
                  * torch.nn.functional.normalize(targets, dim=-1).unsqueeze(1)).sum(-1) / p.temperature
    else:
        scores = (vectors * targets.unsqueeze(1)).sum(-1)
    active = torch.arange(vectors.shape[1])[None, :] < k_u[:, None]
    attention = torch.softmax((p.attention_power * scores).masked_fill(~active, float("-inf")), dim=1)
    return (attention.unsqueeze(-1) * vectors).sum(1)


class MIND(LearnedChannel):
    """MIND multi-interest u2i (see the module docstring).

    Learned state: ``model_``, ``item_vectors_``, ``interests_`` (users x K_max x
    dim), ``k_`` (active interests per user, 0 without a vector), ``index_``,
    ``train_log_``.
    """

    name = "mind"
    description = "MIND: K interest capsules by dynamic routing over the history, each searched in faiss"
    Params = MINDParams

    def fit(self, data: TrainData) -> "MIND":
        import torch

        started = time.perf_counter()
        p = self.params
        self._prepare(data)
        model = build_mind(self.side_, self.attributes_, p, data.seed)

        def user_vector(users, hist, weights, targets):
            vectors, k_u = interests(model, p, users, hist, weights)
            return label_aware(p, vectors, k_u, targets)

        self.train_log_ = train_model(model, user_vector, self.events_, data, p, self.name)
        self.model_ = model
        vectors, has = final_item_vectors(model, self.side_, self.trained_)
        items, weights = serving_inputs(data, p, self.trained_)
        out = np.zeros((data.n_users, p.max_interests, p.dim), dtype=np.float32)
        k = np.zeros(data.n_users, dtype=np.int64)
        saved = torch.get_num_threads()
        torch.set_num_threads(p.threads)
        try:
            with torch.no_grad():
                for lo in range(0, data.n_users, p.query_block):
                    rows = np.arange(lo, min(lo + p.query_block, data.n_users))
                    v, k_u = interests(model, p, torch.from_numpy(rows), torch.from_numpy(vectors[items[rows]]),
                                       torch.from_numpy(weights[rows]))
                    out[rows], k[rows] = v.numpy(), k_u.numpy()
        finally:
            torch.set_num_threads(saved)
        active = (weights.sum(1) > 0) | self.attributes_.known
        k[~active] = 0
        out[~active] = 0.0
        if p.normalize:
            vectors = normalise_rows(vectors)
            out = normalise_rows(out.reshape(-1, p.dim)).reshape(out.shape)
        self.item_vectors_, self.interests_, self.k_ = vectors, out, k
        self.users_with_vector_ = int(active.sum())
        indexed = np.flatnonzero(has)
        self.index_ = VectorIndex.build(vectors[indexed], indexed, p)
        self.fit_seconds_ = time.perf_counter() - started
        return self

    def facts(self) -> dict:
        counts = np.bincount(self.k_, minlength=self.params.max_interests + 1)
        return {**super().facts(), "interests_per_user": {str(k): int(counts[k]) for k in range(1, counts.size)}}

    def recommend(self, data: TrainData, n: int, users: np.ndarray | None = None) -> pl.DataFrame:
        frames = [self._block(data, chunk_rows(chunk), n)
                  for chunk in row_blocks(users, data.n_users, self.params.user_block)]
        frames = [f for f in frames if f.height]
        if not frames:
            return empty_candidates(data)
        out = pl.concat(frames)
        return pl.DataFrame({S.USER: data.user_ids.gather(out["u"]), S.ITEM: data.item_ids.gather(out["i"]),
                             S.SCORE: out[S.SCORE], S.RANK: out[S.RANK]})

    def _block(self, data: TrainData, rows: np.ndarray, n: int) -> pl.DataFrame:
        """Candidates of the users ``rows``: every interest searched, lists interleaved (see the docstring)."""
        index = self.index_
        k_u = self.k_[rows]
        owner = np.repeat(np.arange(rows.size), k_u)
        interest = np.arange(owner.size) - np.repeat(np.cumsum(k_u) - k_u, k_u)
        if owner.size == 0 or index.size == 0:
            return pl.DataFrame()
        queries = self.interests_[rows[owner], interest]
        seen = data.interactions.tocsr()[rows]
        indexed = np.zeros(data.n_items, dtype=bool)
        indexed[index.items] = True
        extra = np.zeros(rows.size, dtype=np.int64)
        if self.exclude_interacted:
            extra = np.bincount(np.repeat(np.arange(rows.size), np.diff(seen.indptr)),
                                weights=indexed[seen.indices], minlength=rows.size).astype(np.int64)
        need = n + extra[owner]
        k_group = np.minimum(np.where(need <= n, n, 1 << np.ceil(np.log2(np.maximum(need, 1))).astype(np.int64)),
                             index.size)
        parts = []
        for k in np.unique(k_group):
            group = np.flatnonzero(k_group == k)
            scores, found = index.search(queries[group], int(k))
            width = found.shape[1]
            parts.append(pl.DataFrame({"q": np.repeat(group, width), "pos": np.tile(np.arange(width), group.size),
                                       "i": found.ravel(), "sim": scores.ravel().astype(np.float64)}))
        found = pl.concat(parts).filter((pl.col("i") >= 0) & (pl.col("sim") > 0))
        found = found.with_columns(owner=pl.Series(owner, dtype=pl.Int64).gather(found["q"]))
        if self.exclude_interacted and seen.nnz:
            pairs = seen.tocoo()
            seen_frame = pl.DataFrame({"owner": pairs.row.astype(np.int64), "i": pairs.col.astype(np.int64)})
            found = found.join(seen_frame, on=["owner", "i"], how="anti")
        ranked = (found.sort("q", "pos")
                  .with_columns(r=pl.int_range(1, pl.len() + 1).over("q"))
                  .sort(["owner", "r", "sim", "i"], descending=[False, False, True, False])
                  .unique(["owner", "i"], keep="first", maintain_order=True)
                  .with_columns(rank=pl.int_range(1, pl.len() + 1).over("owner"))
                  .filter(pl.col("rank") <= n))
        return ranked.select(u=pl.Series(rows, dtype=pl.Int64).gather(ranked["owner"]), i=pl.col("i"),
                             score=1.0 / pl.col("r").cast(pl.Float64), rank=pl.col("rank").cast(pl.Int32))


__all__ = ["MIND", "MINDParams", "interests", "label_aware", "squash"]
