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

Implementation: PyTorch on CPU. All value embeddings (IDs and every field's
values) are rows of one ``nn.Embedding(sparse=True)``; an item is a fixed row of
token indices into it (multi-valued fields padded with a padding row that gets
no gradient), so ``H`` for a batch is one gather and one weighted sum. The
context table and the attention logits are sparse embeddings too, all updated
by ``torch.optim.SparseAdam`` (its update, computed with row gathers: see
:func:`sparse_adam`): each step touches only the rows in the batch (a dense
optimiser would also move every untouched row through its momentum).
Within a batch each distinct item is embedded once, so the sparse gradients
have one row per distinct item rather than one per occurrence (on ml-100k the
optimiser step became about 3x cheaper). Training pairs are generated per
window offset with numpy over a block of walks at a time, never per walk;
negatives come from a guide-table search (:func:`draw_negatives`), one
vectorised draw per block. Training is reproducible under a seed with
``workers = 1`` (more torch threads sum in a different order: ~1e-7 apart).

Measured (``bench/bench_eges.py``, 2 shared cores, one torch thread): about
190,000 pairs/s on the graph of a 5M-event synthetic log (20,000 items,
batch 2048) and 350,000 pairs/s on MovieLens-100K, where a full fit (8.6M pairs
over 5 epochs) takes about 25 s.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl
from pydantic import Field

from recall import schema as S
from recall.channels.deepwalk import DeepWalkParams
from recall.context import TrainData
from recall.embedding import EmbeddingChannel, normalise_rows
from recall.errors import RecallError
from recall.graph import GraphParams, item_graph
from recall.walks import deepwalk_walks

ID_FIELD = "item_id"


# --------------------------------------------------------------------------------------
# Side information
# --------------------------------------------------------------------------------------


@dataclass
class SideInfo:
    """Every item's tokens: rows of the one value table, grouped into fields.

    Row layout of the value table: item IDs ``0 .. n_items - 1``, then each side
    field's values (the field's "unknown" value last), then one padding row.
    Column c of ``tokens`` belongs to field ``column_field[c]`` (0 is the ID);
    a multi-valued field has as many columns as its longest list, and
    ``within`` gives each token's weight inside its field (1 / number of values;
    0 on padding), so every field's weights sum to 1 for every item.
    """

    fields: list[str]          # side fields, in order (field j + 1 in the attention)
    kinds: list[str]           # "categorical", "numeric" or "multi" per side field
    vocab: list[int]           # values per side field, "unknown" included
    tokens: np.ndarray         # int64 (n_items, T)
    within: np.ndarray         # float32 (n_items, T)
    column_field: np.ndarray   # int64 (T,)
    known: np.ndarray          # bool (n_items,): some side value is not "unknown"
    n_rows: int                # rows of the value table, padding included

    @property
    def n_items(self) -> int:
        return self.tokens.shape[0]

    @property
    def n_fields(self) -> int:
        """Side fields, the ID not counted."""
        return len(self.fields)

    @property
    def pad(self) -> int:
        return self.n_rows - 1


def column_kind(series: pl.Series, name: str, p: EGESParams) -> str | None:
    """How a side column is encoded: "multi", "numeric", "categorical", or None (unsupported type)."""
    dtype = series.dtype
    if name in p.categorical_columns:
        return "multi" if isinstance(dtype, (pl.List, pl.Array)) else "categorical"
    if isinstance(dtype, (pl.List, pl.Array)):
        return "multi"
    if dtype.is_float() or dtype.is_temporal():
        return "numeric"
    if dtype.is_integer():
        # Integer ids (category_id, brand_id) and small codes (a price bucket) are
        # categories; larger integer ranges (a release year, a price in cents) are quantities.
        few = series.drop_nulls().n_unique() <= p.numeric_buckets
        return "categorical" if name.endswith("_id") or few else "numeric"
    if dtype in (pl.String, pl.Categorical, pl.Boolean) or isinstance(dtype, pl.Enum):
        return "categorical"
    return None


def dense_codes(values: pl.Series) -> tuple[np.ndarray, int]:
    """Values as codes ``0 .. V - 1`` in sorted order, nulls as ``V``; returns (codes, V + 1)."""
    values = values.cast(pl.String)
    ranks = values.rank("dense")  # 1-based, null stays null
    size = int(ranks.max() or 0)
    return ranks.fill_null(size + 1).to_numpy().astype(np.int64) - 1, size + 1


def quantile_codes(values: pl.Series, buckets: int) -> tuple[np.ndarray, int]:
    """Quantile-bucket codes ``0 .. B - 1`` (B <= buckets, equal edges merged), unknown as ``B``."""
    if values.dtype.is_temporal():
        values = values.to_physical()
    x = values.cast(pl.Float64).to_numpy()
    finite = np.isfinite(x)
    if not finite.any():
        return np.zeros(x.size, dtype=np.int64), 1
    edges = np.unique(np.quantile(x[finite], np.linspace(0.0, 1.0, buckets + 1)[1:-1]))
    codes = np.searchsorted(edges, x, side="right").astype(np.int64)
    codes[~finite] = edges.size + 1
    return codes, edges.size + 2


def field_tokens(series: pl.Series, kind: str, buckets: int) -> tuple[np.ndarray, np.ndarray, int]:
    """One field as (codes (n, m) with -1 padding, known (n,) bool, vocabulary size incl. unknown)."""
    n = series.len()
    if kind == "multi":
        if isinstance(series.dtype, pl.Array):
            series = series.arr.to_list()
        lengths = series.list.len().fill_null(0).to_numpy().astype(np.int64)
        values = series.explode(empty_as_null=False, keep_nulls=False)  # exactly sum(lengths) values
        # A null or empty list becomes one null value: the field's "unknown".
        empty = np.flatnonzero(lengths == 0)
        order = np.argsort(np.concatenate([np.repeat(np.arange(n), lengths), empty]), kind="stable")
        codes, size = dense_codes(pl.concat([values, pl.Series(values.name, [None] * empty.size,
                                                               dtype=values.dtype)]))
        codes = codes[order]
        counts = np.maximum(lengths, 1)
        unknown = size - 1
        row = np.repeat(np.arange(n), counts)
        position = np.arange(codes.size) - np.repeat(np.cumsum(counts) - counts, counts)
        out = np.full((n, int(counts.max()) if n else 1), -1, dtype=np.int64)
        out[row, position] = codes
        known = np.zeros(n, dtype=bool)
        np.logical_or.at(known, row, codes != unknown)
        return out, known, size
    codes, size = quantile_codes(series, buckets) if kind == "numeric" else dense_codes(series)
    return codes[:, None], codes != size - 1, size


def select_side_columns(items: pl.DataFrame, p: EGESParams) -> list[tuple[str, str]]:
    """The (column, kind) pairs used as side information (see the module docstring)."""
    if p.side_columns is not None:
        missing = [c for c in p.side_columns if c not in items.columns]
        if missing:
            raise RecallError(f"side_columns {missing} are not in the items table (columns: "
                              f"{', '.join(items.columns)}); fix side_columns or leave it unset to use all")
        chosen = []
        for name in p.side_columns:
            kind = column_kind(items[name], name, p)
            if kind is None:
                raise RecallError(f"items column '{name}' has type {items[name].dtype}, which EGES cannot "
                                  "encode; remove it from side_columns or convert it to text or numbers")
            chosen.append((name, kind))
        return chosen
    chosen = []
    for name in items.columns:
        if name == S.ITEM or name in p.exclude_columns:
            continue
        kind = column_kind(items[name], name, p)
        if kind is None:
            warnings.warn(f"EGES skips items column '{name}' of type {items[name].dtype}", stacklevel=3)
            continue
        if kind == "categorical" and items[name].dtype == pl.String:
            present = items[name].drop_nulls()
            # A value per item (a title, a URL) is an identifier, not shared side information.
            if present.len() and present.n_unique() > p.max_distinct_share * present.len():
                continue
        chosen.append((name, kind))
    return chosen


def side_info(item_ids: pl.Series, items: pl.DataFrame | None, p: EGESParams) -> SideInfo:
    """Encode the items table into :class:`SideInfo` aligned to item indices (``item_ids``)."""
    n_items = item_ids.len()
    columns = [] if items is None else select_side_columns(items, p)
    parts = [np.arange(n_items, dtype=np.int64)[:, None]]
    weights = [np.ones((n_items, 1), dtype=np.float32)]
    column_field = [0]
    kinds, vocab = [], []
    known = np.zeros(n_items, dtype=bool)
    offset = n_items
    if columns:
        aligned = (pl.DataFrame({S.ITEM: item_ids})
                   .join(items.select(S.ITEM, *[c for c, _ in columns]), on=S.ITEM, how="left",
                         maintain_order="left"))
        for field, (name, kind) in enumerate(columns, start=1):
            codes, field_known, size = field_tokens(aligned[name], kind, p.numeric_buckets)
            valid = codes >= 0
            count = valid.sum(axis=1, keepdims=True)
            parts.append(np.where(valid, codes + offset, -1))
            weights.append((valid / count).astype(np.float32))
            column_field += [field] * codes.shape[1]
            kinds.append(kind)
            vocab.append(size)
            known |= field_known
            offset += size
    tokens = np.concatenate(parts, axis=1)
    pad = offset
    tokens[tokens < 0] = pad
    return SideInfo(fields=[c for c, _ in columns], kinds=kinds, vocab=vocab, tokens=tokens,
                    within=np.concatenate(weights, axis=1), column_field=np.asarray(column_field, dtype=np.int64),
                    known=known, n_rows=pad + 1)


# --------------------------------------------------------------------------------------
# Training pairs and negatives
# --------------------------------------------------------------------------------------


def window_pairs(walks: np.ndarray, window: int, reach: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """All skip-gram (centre, context) pairs of -1-padded walks, one numpy pass per offset.

    A centre at position t pairs with the contexts at ``t +- d`` for
    ``d = 1 .. reach[walk, t]`` (``reach`` defaults to ``window`` everywhere;
    word2vec draws it uniformly from ``1 .. window`` per centre), padding skipped.
    """
    walks = np.asarray(walks)
    centres, contexts = [], []
    for d in range(1, min(window, walks.shape[1] - 1) + 1):
        left, right = walks[:, :-d], walks[:, d:]
        both = (left >= 0) & (right >= 0)
        forward = both if reach is None else both & (reach[:, :-d] >= d)   # centre left, context d ahead
        backward = both if reach is None else both & (reach[:, d:] >= d)   # centre right, context d behind
        centres += [left[forward], right[backward]]
        contexts += [right[forward], left[backward]]
    if not centres:
        return np.zeros(0, dtype=walks.dtype), np.zeros(0, dtype=walks.dtype)
    return np.concatenate(centres), np.concatenate(contexts)


def draw_negatives(cdf: np.ndarray, size: int | tuple, rng: np.random.Generator) -> np.ndarray:
    """Items drawn from the distribution with cumulative probabilities ``cdf`` (int64).

    Item i is the smallest with ``cdf[i] > u`` for a uniform u, as
    ``searchsorted(cdf, u, side="right")`` would give, but found by a guide
    table (Chen & Asau's indexed search): with ``m = len(cdf)`` buckets,
    ``guide[k]`` is the answer for ``u = k / m``, so each draw starts at
    ``guide[floor(u m)]`` and steps forward only past the items whose cdf falls
    inside its bucket, about one step on average, instead of a binary search
    of ``log2(m)`` cache-missing steps.
    """
    u = rng.random(size)
    m = cdf.size
    guide = np.minimum(np.searchsorted(cdf, np.arange(m) / m, side="right"), m - 1)
    found = guide[np.minimum((u * m).astype(np.int64), m - 1)]
    pending = np.flatnonzero((cdf[found] <= u) & (found < m - 1))
    flat, values = found.reshape(-1), u.reshape(-1)
    while pending.size:
        flat[pending] += 1
        pending = pending[(cdf[flat[pending]] <= values[pending]) & (flat[pending] < m - 1)]
    return found


# --------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------


def build_model(side: SideInfo, dim: int, negative: int, attention: bool, seed: int):
    """The EGES (or, without attention, GES) module for this side information."""
    import torch

    class EGESModel(torch.nn.Module):
        """Value table W (IDs and side values), context table Z, attention logits A (EGES only)."""

        def __init__(self):
            super().__init__()
            generator = torch.Generator().manual_seed(seed)
            self.values = torch.nn.Embedding(side.n_rows, dim, sparse=True, padding_idx=side.pad)
            self.context = torch.nn.Embedding(side.n_items, dim, sparse=True)
            with torch.no_grad():
                # word2vec's initialisation: small random inputs, zero outputs.
                self.values.weight.uniform_(-0.5 / dim, 0.5 / dim, generator=generator)
                self.values.weight[side.pad] = 0.0
                self.context.weight.zero_()
            self.logits = None
            if attention:
                self.logits = torch.nn.Embedding(side.n_items, side.n_fields + 1, sparse=True)
                with torch.no_grad():
                    self.logits.weight.zero_()  # equal weights at the start, as GES
            self.register_buffer("tokens", torch.from_numpy(side.tokens))
            self.register_buffer("within", torch.from_numpy(side.within))
            self.register_buffer("column_field", torch.from_numpy(side.column_field))
            self.register_buffer("signs", torch.tensor([1.0] + [-1.0] * negative))

        def field_weights(self, items):
            """softmax(a_v) per item (batch x (n_fields + 1)); equal weights for GES."""
            if self.logits is None:
                return torch.full((items.shape[0], side.n_fields + 1), 1.0 / (side.n_fields + 1))
            return torch.softmax(self.logits(items), dim=-1)

        def item_vectors(self, items):
            """H_v for a batch of items: the attention-weighted sum of their field embeddings."""
            column_weights = self.field_weights(items)[:, self.column_field] * self.within[items]
            embedded = self.values(self.tokens[items])                  # batch x T x dim
            return (column_weights.unsqueeze(-1) * embedded).sum(1)

        def forward(self, centres, contexts, negatives):
            """Mean skip-gram negative-sampling loss of a batch of pairs."""
            # Each distinct item is embedded once and its rows reused: the sparse gradients
            # then hold one row per distinct item instead of one per occurrence, which
            # makes SparseAdam's coalescing (a sort and a sum) several times cheaper.
            centre_items, centre_at = torch.unique(centres, return_inverse=True)
            h = self.item_vectors(centre_items)[centre_at]
            targets = torch.cat([contexts.unsqueeze(1), negatives], dim=1)     # batch x (1 + K)
            target_items, target_at = torch.unique(targets, return_inverse=True)
            z = self.context(target_items)[target_at]                          # batch x (1 + K) x dim
            scores = (z * h.unsqueeze(1)).sum(-1) * self.signs                 # +positive, -negatives
            return -torch.nn.functional.logsigmoid(scores).sum(-1).mean()

    return EGESModel()


def sparse_adam(params, lr: float = 1e-3):
    """``torch.optim.SparseAdam`` with the same update computed by row gathers instead of sparse masks.

    SparseAdam reads the moments of the rows in the gradient with
    ``exp_avg.sparse_mask(grad)`` and writes them back with sparse additions;
    on 20,000 items those two took over a third of the training time. Here the
    rows are gathered with ``index_select`` and written with ``index_copy_`` /
    ``index_add_``, in the same arithmetic order, so the parameters are
    bit-identical to SparseAdam's (a test checks that) while the step is about
    2.5x cheaper (training 1.3x faster). The state has the same layout
    (``step``, ``exp_avg``, ``exp_avg_sq``).
    """
    import torch

    class IndexSparseAdam(torch.optim.SparseAdam):
        @torch.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                beta1, beta2 = group["betas"]
                lr, eps = float(group["lr"]), group["eps"]
                for param in group["params"]:
                    if param.grad is None:
                        continue
                    grad = param.grad.coalesce()  # the update is non-linear: one row per index
                    rows, values = grad._indices()[0], grad._values()
                    state = self.state[param]
                    if not state:
                        state["step"] = 0
                        state["exp_avg"] = torch.zeros_like(param)
                        state["exp_avg_sq"] = torch.zeros_like(param)
                    state["step"] += 1
                    if values.numel() == 0:
                        continue
                    if group.get("maximize", False):
                        values = -values
                    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                    # old += (1 - beta) * (new - old), exactly as SparseAdam writes it.
                    old_avg = exp_avg.index_select(0, rows)
                    avg = values.sub(old_avg).mul_(1 - beta1).add_(old_avg)
                    old_sq = exp_avg_sq.index_select(0, rows)
                    sq = values.pow(2).sub_(old_sq).mul_(1 - beta2).add_(old_sq)
                    exp_avg.index_copy_(0, rows, avg)
                    exp_avg_sq.index_copy_(0, rows, sq)
                    step = state["step"]
                    step_size = lr * math.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
                    param.index_add_(0, rows, -step_size * avg.div_(sq.sqrt_().add_(eps)))
            return None

    return IndexSparseAdam(params, lr=lr)


@dataclass
class TrainResult:
    """A trained model and what the training saw."""

    model: object               # the trained torch module
    trained: np.ndarray         # bool (n_items,): the item is on a walk (after min_count)
    losses: list[float]         # mean loss per pair, per epoch
    pairs: int                  # pairs trained on, over all epochs
    seconds: float              # training wall time (pair generation included)


def compact(walks: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Walks with the tokens where ``keep`` is false removed and the rest shifted left (-1 padded).

    As word2vec drops a down-sampled or out-of-vocabulary word from its sentence
    before windowing, the neighbours of a removed token become each other's contexts.
    """
    keep = keep & (walks >= 0)
    position = np.cumsum(keep, axis=1) - 1
    out = np.full(walks.shape, -1, dtype=walks.dtype)
    rows = np.broadcast_to(np.arange(walks.shape[0])[:, None], walks.shape)
    out[rows[keep], position[keep]] = walks[keep]
    return out


def keep_probability(counts: np.ndarray, sample: float) -> np.ndarray:
    """word2vec's down-sampling: P(keep) = (sqrt(c / t) + 1) t / c with t = sample x total, capped at 1."""
    if sample <= 0:
        return np.ones(counts.size)
    threshold = sample * counts.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        probability = (np.sqrt(counts / threshold) + 1.0) * threshold / counts
    return np.where(counts > 0, np.minimum(probability, 1.0), 0.0)


def train(walks: np.ndarray, side: SideInfo, p: EGESParams, seed: int) -> TrainResult:
    """Skip-gram with negative sampling over the walks; see the module docstring.

    Items seen fewer than ``min_count`` times are removed from the walks (they are
    cold). Each epoch shuffles the walks and takes ``walk_block`` of them at a
    time: frequent items down-sampled (``sample``), their pairs at all window
    offsets generated at once, shuffled, and trained in batches of
    ``batch_size`` pairs with ``negative`` negatives each. The learning rate
    decays linearly from ``learning_rate`` to ``min_learning_rate`` over the
    walks of all epochs, as in word2vec.
    """
    import time

    import torch

    started = time.perf_counter()
    walks = np.asarray(walks)
    if walks.ndim != 2:
        raise RecallError("walks must be a 2-d array (walks x length)")
    rng = np.random.default_rng(seed)
    counts = np.bincount(walks[walks >= 0].ravel(), minlength=side.n_items)
    if p.min_count > 1:
        walks = compact(walks, counts[np.maximum(walks, 0)] >= p.min_count)
        counts = np.where(counts >= p.min_count, counts, 0)
    trained = counts > 0
    keep = keep_probability(counts.astype(np.float64), p.sample)
    model = build_model(side, p.dim, p.negative, p.attention, seed)
    optimizer = sparse_adam(list(model.parameters()), lr=p.learning_rate)
    cdf = None
    if trained.any():
        weights = np.where(trained, counts.astype(np.float64) ** p.ns_exponent, 0.0)
        cdf = np.cumsum(weights) / weights.sum()
        cdf[np.flatnonzero(weights)[-1]:] = 1.0  # rounding must not leave room for a draw past the last item
    losses, pairs = [], 0
    n_walks = walks.shape[0]
    threads = torch.get_num_threads()
    torch.set_num_threads(p.workers)
    try:
        for epoch in range(p.epochs if cdf is not None else 0):
            total, count = 0.0, 0
            order = rng.permutation(n_walks)
            for lo in range(0, n_walks, p.walk_block):
                block = walks[order[lo:lo + p.walk_block]]
                if p.sample > 0:
                    block = compact(block, rng.random(block.shape) < keep[np.maximum(block, 0)])
                reach = rng.integers(1, p.window + 1, size=block.shape) if p.shrink_window else None
                centres, contexts = window_pairs(block, p.window, reach)
                if centres.size == 0:
                    continue
                shuffle = rng.permutation(centres.size)
                centres = torch.from_numpy(centres[shuffle].astype(np.int64))
                contexts = torch.from_numpy(contexts[shuffle].astype(np.int64))
                negatives = torch.from_numpy(draw_negatives(cdf, (centres.shape[0], p.negative), rng))
                n_pairs = centres.shape[0]
                for b in range(0, n_pairs, p.batch_size):
                    # word2vec's schedule: linear in the share of walks processed so far.
                    progress = (epoch * n_walks + lo + block.shape[0] * b / n_pairs) / (p.epochs * n_walks)
                    optimizer.param_groups[0]["lr"] = (p.learning_rate
                                                       + (p.min_learning_rate - p.learning_rate) * progress)
                    batch = slice(b, b + p.batch_size)
                    optimizer.zero_grad(set_to_none=True)
                    loss = model(centres[batch], contexts[batch], negatives[batch])
                    loss.backward()
                    optimizer.step()
                    size = min(p.batch_size, n_pairs - b)
                    total += loss.item() * size
                    count += size
            losses.append(total / max(count, 1))
            pairs += count
    finally:
        torch.set_num_threads(threads)
    return TrainResult(model=model, trained=trained, losses=losses, pairs=pairs,
                       seconds=time.perf_counter() - started)


def final_vectors(result: TrainResult, side: SideInfo, cold_weights: str
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """H for every item (float32, not normalised), the mask of items with a vector, and the weights used.

    Trained items use their own softmax(a_v) over the ID and side fields; cold
    items (never on a walk) use only their side fields, weighted per
    ``cold_weights``. The weights returned are ``n_items x (n_fields + 1)``, the ID
    first; an item without a vector (cold and no known side value) has a zero vector.
    """
    import torch

    model = result.model
    with torch.no_grad():
        weights = model.field_weights(torch.arange(side.n_items)).numpy().astype(np.float32)
        cold = ~result.trained
        if side.n_fields and cold.any():
            if cold_weights == "attention" and result.trained.any():
                side_weights = weights[result.trained, 1:].mean(axis=0)
            else:
                side_weights = np.ones(side.n_fields, dtype=np.float32)
            weights[cold, 0] = 0.0
            weights[cold, 1:] = side_weights / side_weights.sum()
        column_weights = torch.from_numpy(weights)[:, model.column_field] * model.within
        vectors = (column_weights.unsqueeze(-1) * model.values(model.tokens)).sum(1).numpy()
    has_vector = result.trained | side.known
    vectors = np.where(has_vector[:, None], vectors, np.float32(0))
    return np.ascontiguousarray(vectors, dtype=np.float32), has_vector, weights


# --------------------------------------------------------------------------------------
# Parameters and the channels
# --------------------------------------------------------------------------------------


class EGESParams(DeepWalkParams):
    """EGES settings: the session graph and DeepWalk walks, skip-gram, side information, faiss."""

    # 3 epochs of 4096-pair batches at 0.04 match 5 epochs of 2048 at 0.02 on ml-100k
    # (Recall@200 0.144 vs 0.140) in half the time; fewer epochs without the larger
    # step fall short (2 epochs: 0.095-0.123). See BENCHMARKS.md.
    epochs: int = Field(3, ge=1, description="passes over the walks")
    learning_rate: float = Field(0.04, gt=0, description="initial SparseAdam learning rate, decayed linearly "
                                                          "to min_learning_rate")
    min_learning_rate: float = Field(1e-4, gt=0, description="final SparseAdam learning rate")
    workers: int = Field(1, ge=1, description="torch CPU threads (torch.set_num_threads); only 1 is "
                                              "bit-reproducible (parallel sums round differently)")
    attention: bool = Field(True, description="learn per-item attention over the fields (EGES); false: equal "
                                              "fixed weights (GES)")
    batch_size: int = Field(4096, ge=1, description="pairs per optimiser step (smaller: more updates, slower)")
    shrink_window: bool = Field(True, description="draw each centre's window from 1..window, as word2vec "
                                                  "(fewer pairs, near contexts weigh more)")
    walk_block: int = Field(50_000, ge=1, description="walks whose pairs are generated at once (memory: "
                                                      "about 2 x window x walk_length x this many pairs)")
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
    Params = EGESParams

    def walks(self, data: TrainData) -> np.ndarray:
        """DeepWalk walks on the session graph (the same walks as ``deepwalk`` with equal settings)."""
        p = self.params
        return deepwalk_walks(item_graph(data, GraphParams.of(p)), p.walks_per_node, p.walk_length, data.seed)

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


__all__ = ["EGES", "EGESParams", "GES", "GESParams", "SideInfo", "compact", "draw_negatives", "final_vectors",
           "keep_probability", "side_info", "sparse_adam", "train", "window_pairs"]
