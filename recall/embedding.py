"""Embedding channels: item vectors into faiss, i2i tables by nearest neighbours, u2i two ways.

Every embedding channel (Item2Vec, DeepWalk, Node2Vec, EGES) only produces item
vectors; :class:`EmbeddingChannel` does the rest the same way for all of them.

**Similarity.** Vectors are L2-normalised, so the inner product is the cosine.
For every item with a vector, its ``top_k`` nearest other items make its row of
the i2i table, scored by the cosine. Cosines <= 0 are dropped rather than
shifted: an item pointing away from the trigger is not a neighbour, and the
shared trigger expansion sums scores, where a negative score would cancel a
positive one from another trigger. Items without a vector (not in training, or
below ``min_count``) have empty rows and are never recalled.

**Index.** ``ann = "exact"`` is faiss ``IndexFlatIP`` (brute force, exact);
``"hnsw"`` is ``IndexHNSWFlat`` (graph search, ``hnsw_m`` links per node) and
``"ivf"`` is ``IndexIVFFlat`` (``ivf_nlist`` k-means cells, ``nprobe`` searched),
both with the inner-product metric; ``"auto"`` is exact up to ``ann_threshold``
items with vectors and HNSW above. faiss uses all cores (OpenMP) unless
``faiss_threads`` is set; an HNSW graph built on several threads depends on
their timing, so set ``faiss_threads = 1`` when an approximate index must be
bit-reproducible (the exact index is reproducible on any thread count).

**Rows searched by need.** Trigger expansion reads only the rows of items that
are some user's triggers (on taobao-84k's last day, 28,600 of 48,900 items), so
those rows are searched first and the others only when the whole table is
published. faiss's exact search is not batch-invariant (a query's scores move in
the last bit with the other queries of its batch), so both sets are searched
whole, each in one fixed order: every row is the same whichever users are scored,
in whatever order, and whether or not the table was published first.

**Recall (u2i).** ``retrieval = "triggers"`` (default) is the shared trigger
expansion of every i2i channel: score(u, j) = sum over triggers i of weight(u, i)
x cos(i, j). ``retrieval = "user_vector"`` builds one vector per user, the
trigger-weighted mean of the trigger items' vectors (behaviour weight x recency
decay, as in ``[triggers]``, with the half-life ``user_vector_half_life_days`` if
set), normalised, and searches the index directly: score(u, j) = cos(user
vector, j), the ``n`` best items the user has not engaged with.

**Skip-gram.** :func:`skipgram` wraps gensim's Word2Vec in skip-gram mode with
negative sampling (``sg = 1, hs = 0``). With ``workers = 1`` and a fixed seed the
vectors are bit-identical across runs; gensim with several workers is not
(threads race on the shared weights), so use more workers only where speed
matters more than reproducibility.
"""

from __future__ import annotations

import dataclasses
import threading
from abc import abstractmethod
from typing import Literal

import numpy as np
import polars as pl
import scipy.sparse as sp
from pydantic import Field

from recall import schema as S
from recall.interface import ChannelParams, I2IChannel, Span, empty_candidates, expand_triggers
from recall.context import TrainData
from recall.errors import RecallError
from recall.sparse import blocks, chunk_rows, csr_to_frame, row_blocks, top_k_per_row


class IndexParams(ChannelParams):
    """faiss index settings (:class:`VectorIndex`), for every channel that searches vectors."""

    ann: Literal["auto", "exact", "hnsw", "ivf"] = Field(
        "auto", description="faiss index: exact inner product, HNSW or IVF; auto: exact up to ann_threshold")
    # Every item's neighbours on taobao-84k (53,500 vectors, dim 32, one thread): exact 7.3 s, HNSW
    # 23.1 s (build 11.7 s); random unit vectors at dim 64: 9.2 vs 51 CPU s. Exact costs grow with the
    # items per query and HNSW's barely, so they meet near 170,000-300,000 items (BENCHMARKS.md).
    ann_threshold: int = Field(150_000, ge=1, description="items with vectors above which auto uses HNSW")
    hnsw_m: int = Field(32, ge=4, description="HNSW links per node")
    hnsw_ef_construction: int = Field(200, ge=8, description="HNSW candidate list size while building")
    hnsw_ef_search: int = Field(128, ge=8, description="HNSW candidate list size while searching "
                                                       "(raised to k when k is larger)")
    ivf_nlist: int = Field(1024, ge=1, description="IVF cells (k-means centroids); capped at items / 39")
    nprobe: int = Field(16, ge=1, description="IVF cells searched per query")
    faiss_threads: int = Field(0, ge=0, description="faiss OpenMP threads; 0: faiss default (all cores)")
    query_block: int = Field(20_000, ge=1, description="queries per faiss search (memory: block x k results)")


class EmbeddingParams(IndexParams):
    """Skip-gram training, faiss index and retrieval settings shared by the embedding channels."""

    dim: int = Field(64, ge=2, description="vector dimension")
    window: int = Field(5, ge=1, description="skip-gram context window (positions each side)")
    negative: int = Field(5, ge=1, description="negative samples per positive pair")
    ns_exponent: float = Field(0.75, description="negatives drawn by frequency^ns_exponent (0: uniform, "
                                                 "1: by frequency, negative: rare items favoured)")
    sample: float = Field(1e-3, ge=0, description="down-sampling threshold of frequent items (0: off)")
    learning_rate: float = Field(0.025, gt=0, description="initial SGD learning rate (gensim alpha), "
                                                          "decayed linearly to min_learning_rate")
    min_learning_rate: float = Field(1e-4, gt=0, description="final SGD learning rate (gensim min_alpha)")
    epochs: int = Field(5, ge=1, description="passes over the sequences")
    min_count: int = Field(1, ge=1, description="items seen fewer times in the sequences get no vector")
    workers: int = Field(1, ge=1, description="gensim threads; only 1 is bit-reproducible")
    top_k: int = Field(100, ge=1, description="neighbours kept per item in the i2i table")
    score_power: float = Field(1.0, gt=0, description="i2i score = cosine^power: above 1, each trigger's "
                                                      "closest neighbours dominate the trigger expansion")
    retrieval: Literal["triggers", "user_vector"] = Field(
        "triggers", description="u2i by trigger expansion of the i2i table, or by searching a user vector")
    user_vector_half_life_days: Span = Field(
        None, gt=0, description="recency half-life of the trigger weights in the user vector "
                                "(inf or unset: triggers.half_life_days)")
    publish_vectors: bool = Field(False, description="also publish embeddings/<channel>.parquet "
                                                     "(item_id, vector)")


def normalise_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32); zero rows stay zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def skipgram(sentences: list[list[int]], params: EmbeddingParams, seed: int, n_items: int
             ) -> tuple[np.ndarray, np.ndarray]:
    """Skip-gram with negative sampling (gensim Word2Vec, sg=1, hs=0) over item-index sentences.

    Parameters
    ----------
    sentences
        Lists of item indices (ints in ``range(n_items)``), e.g. sessions or walks.
    params
        Training settings: ``dim, window, negative, ns_exponent, sample, epochs,
        min_count, workers, learning_rate, min_learning_rate``.
    seed
        gensim's seed (initial vectors and sampling).
    n_items
        Number of item indices.

    Returns
    -------
    vectors, mask
        float32 ``(n_items, dim)`` L2-normalised input vectors (zero rows for items
        without one) and the bool mask of items that have a vector.
    """
    from gensim.models import Word2Vec

    vectors = np.zeros((n_items, params.dim), dtype=np.float32)
    mask = np.zeros(n_items, dtype=bool)
    counts = np.bincount(np.concatenate([np.asarray(s, dtype=np.int64) for s in sentences])
                         if sentences else np.zeros(0, dtype=np.int64), minlength=n_items)
    if not (counts >= params.min_count).any():
        return vectors, mask  # nothing to learn from: no item gets a vector
    model = Word2Vec(sentences=sentences, vector_size=params.dim, window=params.window, sg=1, hs=0,
                     negative=params.negative, ns_exponent=params.ns_exponent, sample=params.sample,
                     alpha=params.learning_rate, min_alpha=params.min_learning_rate,
                     epochs=params.epochs, min_count=params.min_count, workers=params.workers,
                     seed=seed, max_vocab_size=None, sorted_vocab=1)
    keys = np.asarray(model.wv.index_to_key, dtype=np.int64)
    vectors[keys] = normalise_rows(model.wv.vectors)
    mask[keys] = True
    return vectors, mask


@dataclasses.dataclass
class VectorIndex:
    """A faiss inner-product index over the vectors of some items, searched by item index."""

    index: object       # the faiss index
    items: np.ndarray   # item index of each faiss row
    kind: str           # "exact", "hnsw" or "ivf"
    params: IndexParams

    @classmethod
    def build(cls, vectors: np.ndarray, items: np.ndarray, params: IndexParams) -> "VectorIndex":
        """Index ``vectors`` (unit rows for cosines, any rows for inner products) of the items ``items``."""
        import faiss

        n, dim = vectors.shape
        kind = params.ann
        if kind == "auto":
            kind = "exact" if n <= params.ann_threshold else "hnsw"
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with faiss_threads(params.faiss_threads):
            if kind == "exact":
                index = faiss.IndexFlatIP(dim)
            elif kind == "hnsw":
                index = faiss.IndexHNSWFlat(dim, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
                index.hnsw.efConstruction = params.hnsw_ef_construction
            else:
                # faiss wants ~39 training points per centroid; fewer cells than that is
                # still a valid IVF, just coarser.
                nlist = max(1, min(params.ivf_nlist, n // 39))
                quantizer = faiss.IndexFlatIP(dim)
                # (faiss's Python wrapper keeps a reference to the quantizer in the index.)
                index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
                index.train(vectors)
                index.nprobe = min(params.nprobe, nlist)
            if n:
                index.add(vectors)
        return cls(index=index, items=np.asarray(items, dtype=np.int64), kind=kind, params=params)

    @property
    def size(self) -> int:
        return int(self.items.size)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best items per query: scores (float32) and item indices (-1 where fewer found)."""
        k = min(k, self.size)
        if k == 0 or len(queries) == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = max(self.params.hnsw_ef_search, k)
        with faiss_threads(self.params.faiss_threads):
            scores, rows = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        items = np.where(rows >= 0, self.items[np.maximum(rows, 0)], -1)
        return scores, items


class faiss_threads:
    """Context manager setting faiss's OpenMP thread count (0: leave it) and restoring it."""

    def __init__(self, threads: int):
        self.threads = threads

    def __enter__(self):
        if self.threads:
            import faiss

            self.saved = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(self.threads)

    def __exit__(self, *exc):
        if self.threads:
            import faiss

            faiss.omp_set_num_threads(self.saved)


def results_to_csr(query_rows: np.ndarray, scores: np.ndarray, items: np.ndarray, shape: tuple[int, int],
                   drop=None) -> sp.csr_matrix:
    """Search results as a CSR matrix: row ``query_rows[r]`` holds ``items[r]`` with ``scores[r]``.

    Missing results (-1), scores <= 0 and entries where ``drop(rows, items)`` is true are left out.
    """
    rows = np.repeat(np.asarray(query_rows, dtype=np.int64), items.shape[1])
    cols = items.ravel()
    values = scores.ravel().astype(np.float64)
    keep = (cols >= 0) & (values > 0)
    if drop is not None:
        keep[keep] = ~drop(rows[keep], cols[keep])
    return sp.csr_matrix((values[keep], (rows[keep], cols[keep])), shape=shape)


def neighbour_table(index: VectorIndex, vectors: np.ndarray, n_items: int, top_k: int,
                    block: int, queries: np.ndarray | None = None) -> sp.csr_matrix:
    """i2i table: for each indexed item (or each item of ``queries``) its ``top_k`` most similar
    other items, cosine > 0; the other rows are empty."""
    queries = index.items if queries is None else np.asarray(queries, dtype=np.int64)
    parts = []
    for start, stop in blocks(queries.size, block):
        items = queries[start:stop]
        # One extra result, since the item itself is normally its own best match.
        scores, found = index.search(vectors[items], top_k + 1)
        table = results_to_csr(items, scores, found, (n_items, n_items), drop=lambda r, c: r == c)
        parts.append(top_k_per_row(table, top_k))  # an approximate index may not return self first
    if not parts:
        return sp.csr_matrix((n_items, n_items), dtype=np.float64)
    return sp.csr_matrix(sum(parts[1:], parts[0]))


def user_weights(data: TrainData, half_life_days: float | None) -> sp.csr_matrix:
    """The users x items weights of the user vectors: the trigger matrix, optionally re-decayed."""
    if half_life_days is None:
        return data.trigger_matrix
    triggers = data.triggers.model_copy(update={"half_life_days": half_life_days})
    return dataclasses.replace(data, triggers=triggers).trigger_matrix


def search_users(data: TrainData, index: VectorIndex, vectors: np.ndarray, n: int, *,
                 half_life_days: float | None = None, exclude_interacted: bool = True,
                 user_block: int = 5_000, users: np.ndarray | None = None) -> pl.DataFrame:
    """u2i by user vector: normalise(sum_i w(u, i) v_i), its ``n`` nearest unseen items with cosine > 0."""
    weights = user_weights(data, half_life_days)
    return search_queries(data, index, lambda rows: normalise_rows(weights[rows] @ vectors), n,
                          exclude_interacted=exclude_interacted, user_block=user_block, users=users)


def search_queries(data: TrainData, index: VectorIndex, queries_of, n: int, *,
                   exclude_interacted: bool = True, user_block: int = 5_000,
                   users: np.ndarray | None = None) -> pl.DataFrame:
    """u2i by searching one query vector per user: the ``n`` best unseen items with a score > 0.

    ``queries_of(rows)`` gives the float32 query vectors of the user indices
    ``rows`` (a slice or an index array); users with a zero vector get nothing.
    faiss cannot skip a different set of items per query, so each user asks for
    ``n`` plus the number of indexed items they engaged with (rounded up to a power
    of two, so users are searched in a few groups of equal ``k``) and the engaged
    ones are removed from the answer.
    """
    seen = data.interactions.tocsr()
    indexed = np.zeros(data.n_items, dtype=bool)
    indexed[index.items] = True
    seen_keys = None
    frames = []
    for chunk in row_blocks(users, data.n_users, user_block):
        size = len(chunk_rows(chunk))
        queries = np.asarray(queries_of(chunk), dtype=np.float32)
        active = np.flatnonzero(np.abs(queries).sum(axis=1) > 0)
        block_seen = seen[chunk]
        extra = np.zeros(size, dtype=np.int64)
        if exclude_interacted:
            # Only engaged items that are in the index can take a result slot.
            extra = np.bincount(np.repeat(np.arange(size), np.diff(block_seen.indptr)),
                                weights=indexed[block_seen.indices], minlength=size).astype(np.int64)
            block_seen.sort_indices()
            # Sorted keys (CSR rows, sorted columns): membership is one binary search.
            seen_keys = (np.repeat(np.arange(size, dtype=np.int64), np.diff(block_seen.indptr))
                         * data.n_items + block_seen.indices)

        def drop(rows, cols):
            if seen_keys is None or seen_keys.size == 0:
                return np.zeros(rows.size, dtype=bool)
            wanted = rows * data.n_items + cols
            at = np.minimum(np.searchsorted(seen_keys, wanted), seen_keys.size - 1)
            return seen_keys[at] == wanted

        k_needed = n + extra[active]
        k_group = np.where(k_needed <= n, n, 1 << np.ceil(np.log2(np.maximum(k_needed, 1))).astype(np.int64))
        k_group = np.minimum(k_group, index.size)
        table = sp.csr_matrix((size, data.n_items), dtype=np.float64)
        for k in np.unique(k_group):
            group = active[k_group == k]
            scores, found = index.search(queries[group], int(k))
            table = table + results_to_csr(group, scores, found, table.shape, drop=drop)
        frames.append(csr_to_frame(top_k_per_row(table, n), data.user_ids, data.item_ids, S.USER, S.ITEM,
                                   row_index=chunk_rows(chunk)))
    return pl.concat(frames) if frames else empty_candidates(data)


class EmbeddingChannel(I2IChannel):
    """An i2i channel whose similarity is the cosine between learned item vectors.

    Subclasses implement :meth:`item_vectors`; ``fit`` indexes the vectors in faiss
    and builds the i2i table; ``recommend`` expands triggers (default) or searches
    user vectors (``retrieval = "user_vector"``). Learned state: ``vectors_``
    (float32 n_items x dim, unit rows, zero where ``has_vector_`` is false),
    ``has_vector_``, ``index_`` (a :class:`VectorIndex`) and the i2i table's rows, searched
    when first needed (:meth:`neighbour_rows`; ``similarity_`` is the whole table).
    """

    Params = EmbeddingParams

    @abstractmethod
    def item_vectors(self, data: TrainData) -> tuple[np.ndarray, np.ndarray]:
        """float32 ``(n_items, dim)`` item vectors (L2-normalised) and the bool mask of items with one."""

    def fit(self, data: TrainData) -> "EmbeddingChannel":
        vectors, mask = self.item_vectors(data)
        vectors = np.asarray(vectors)
        mask = np.asarray(mask, dtype=bool)
        if vectors.ndim != 2 or vectors.shape[0] != data.n_items or mask.shape != (data.n_items,):
            raise RecallError(f"channel {self.name}: item_vectors must return ({data.n_items}, dim) vectors "
                              f"and a ({data.n_items},) mask, got {vectors.shape} and {mask.shape}")
        # Normalised again so a subclass's rounding cannot make inner products exceed 1.
        self.vectors_ = np.where(mask[:, None], normalise_rows(vectors), np.float32(0))
        self.has_vector_ = mask & (np.abs(self.vectors_).sum(axis=1) > 0)
        items = np.flatnonzero(self.has_vector_)
        self.index_ = VectorIndex.build(self.vectors_[items], items, self.params)
        triggers = data.trigger_matrix
        is_trigger = np.zeros(data.n_items, dtype=bool)
        is_trigger[triggers.indices[triggers.data > 0]] = True
        # Rows searched by need (module docstring): the trigger items' rows, then the others.
        self.row_sets_ = {"triggers": items[is_trigger[items]], "others": items[~is_trigger[items]]}
        self.fitted_triggers_ = triggers
        self.neighbours_ = {}
        self.neighbours_lock_ = threading.Lock()
        return self

    def neighbour_rows(self, row_set: str) -> sp.csr_matrix:
        """The i2i table's rows of ``row_sets_[row_set]``, searched once (the other rows empty)."""
        with self.neighbours_lock_:
            if row_set not in self.neighbours_:
                table = neighbour_table(self.index_, self.vectors_, self.vectors_.shape[0], self.params.top_k,
                                        self.params.query_block, self.row_sets_[row_set])
                if self.params.score_power != 1:
                    table.data **= self.params.score_power  # monotone: the neighbour order is unchanged
                self.neighbours_[row_set] = table
            return self.neighbours_[row_set]

    @property
    def similarity_(self) -> sp.csr_matrix:
        """The whole i2i table: every item with a vector, its ``top_k`` neighbours."""
        return sp.csr_matrix(self.neighbour_rows("triggers") + self.neighbour_rows("others"))

    def item_similarity(self, data: TrainData) -> sp.csr_matrix:
        return self.fit(data).similarity_

    def recommend(self, data: TrainData, n: int, users: np.ndarray | None = None) -> pl.DataFrame:
        if self.params.retrieval == "triggers":
            # Only trigger items' rows meet the trigger matrix (another data's triggers: every row).
            same = data.trigger_matrix is self.fitted_triggers_
            return expand_triggers(data, self.neighbour_rows("triggers") if same else self.similarity_, n,
                                   exclude_interacted=self.exclude_interacted, user_block=self.params.user_block,
                                   users=users)
        return search_users(data, self.index_, self.vectors_, n,
                            half_life_days=self.params.user_vector_half_life_days,
                            exclude_interacted=self.exclude_interacted, user_block=self.params.user_block,
                            users=users)

    def extra_tables(self, data: TrainData) -> dict[str, pl.DataFrame]:
        if not self.params.publish_vectors:
            return {}
        items = np.flatnonzero(self.has_vector_)
        table = pl.DataFrame({S.ITEM: data.item_ids.gather(items),
                              "vector": pl.Series(self.vectors_[items]).cast(pl.List(pl.Float32))})
        return {f"embeddings/{self.name}.parquet": table}


__all__ = ["EmbeddingChannel", "EmbeddingParams", "IndexParams", "VectorIndex", "neighbour_table",
           "normalise_rows", "search_queries", "search_users", "skipgram"]
