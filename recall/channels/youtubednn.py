"""YouTube DNN / two-tower recall (Covington et al., RecSys 2016; Yi et al., RecSys 2019).

**Towers.** The item tower is the EGES side-information encoder without
attention (:func:`recall.channels.eges.side_info`, reused): an item's vector is
its ID embedding plus, for every side field (category, brand, price bucket,
genres, ...), the mean embedding of its values in that field. The user tower
pools the item-tower vectors of the user's recent items, weighted as triggers
are weighted for the i2i channels (``triggers.behavior_weights`` x recency
halving with ``triggers.half_life_days``, inside ``triggers.window_days``, at
most ``max_history`` items), concatenates one embedding per users-table
attribute (gender, age band, city, ...; encoded as EGES encodes item columns:
categories per value, numbers in quantile buckets, a missing value as the
field's own "unknown"; identifier-like text such as zip codes left out) and
runs the result through an MLP (``hidden`` ReLU layers, then a linear map back
to ``dim``). With ``residual = true`` the MLP's output is added to the pooled
vector, so an untrained MLP starts from the mean of the history (it converges
much faster on small logs). Without a users table the attributes are simply
absent; a user without history but with attributes still gets a vector.

**Training.** Next-item prediction on the training events handed to ``fit``
(in evaluation they end at the split T, so no target or history is ever
after it): every engaged event of the channel's ``behaviors`` with at least
one earlier event of the same user inside the trigger window is a target; its
history is the user's ``max_history`` latest earlier events in the window,
weighted by behaviour x halving(age before the target). With
``new_items_only`` (default) a target must be an item the user had not engaged
with before, as served candidates are (the seen items are excluded at serving).
The loss is the sampled softmax over the target and the negatives, both scored
``s(u, i) = cos(u, v_i) / temperature`` (raw inner products with
``normalize = false``):

* ``negatives = "in_batch"``: the other distinct targets of the batch; they
  are drawn in proportion to their frequency q_i among the targets, so every
  logit is corrected by ``- log q_i`` (the logQ correction of Yi et al.:
  without it popular items are over-penalised as negatives);
* ``negatives = "log_uniform"``: ``num_negatives`` items shared by the batch,
  drawn from the log-uniform (Zipfian) distribution over the items ranked by
  training popularity, ``Q(r) = log((r + 2) / (r + 1)) / log(N + 1)``, as
  TensorFlow's candidate sampler; logits corrected by ``- log(S Q)``.

Negatives that equal the row's target (accidental hits) are masked out. Item
and attribute embeddings are sparse rows updated by ``torch.optim.SparseAdam``;
the MLP by Adam. Each epoch
shuffles the targets (seeded); histories are gathered per batch with numpy
index arithmetic (no loop over events). ``threads`` torch threads (default 1,
the only bit-reproducible setting).

**Recall.** score(u, i) = u . v_i by faiss inner-product search
(:class:`recall.embedding.VectorIndex`), the ``n`` best items the user has not
engaged with, scores <= 0 dropped (:func:`recall.embedding.search_queries`).
Items seen in training are indexed with their full vectors; items only in the
items table (cold) are indexed with their side-information part alone when
they have a known side value. The manifest's ``channel_facts`` hold the loss
per epoch, the number of training examples, examples per second and the fit
time.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import ClassVar, Literal

import numpy as np
import polars as pl
from pydantic import Field

from recall import schema as S
from recall.context import IIDX, UIDX, TrainData
from recall.decay import DAY, halving
from recall.embedding import IndexParams, VectorIndex, normalise_rows, search_queries
from recall.interface import BehaviorList, Channel

log = logging.getLogger("recall")
# Held while towers are built: channels fitted in parallel threads (run.workers) would
# otherwise reseed, or draw from, each other's global torch generator.
GLOBAL_TORCH_RNG = threading.Lock()


class TwoTowerParams(IndexParams):
    """Settings shared by the learned user-to-item channels (``youtubednn``, ``mind``)."""

    behaviors: BehaviorList = Field(default_factory=lambda: ["click", "fav", "cart", "buy"],
                                    description="behaviours that are history and targets")
    dim: int = Field(32, ge=2, description="dimension of item and user vectors")
    attribute_dim: int = Field(8, ge=1, description="embedding dimension of each user attribute")
    hidden: list[int] = Field(default_factory=lambda: [64], description="ReLU layers of the user MLP")
    residual: bool = Field(True, description="user vector = pooled history + MLP (false: MLP output only)")
    max_history: int = Field(30, ge=1, description="latest history items pooled per user / target")
    new_items_only: bool = Field(True, description="targets only items the user had not engaged with before")
    negatives: Literal["in_batch", "log_uniform"] = Field("in_batch", description="sampled-softmax negatives")
    num_negatives: int = Field(512, ge=1, description="log-uniform negatives shared by a batch")
    logq: bool = Field(True, description="subtract log of the sampling probability from the logits")
    normalize: bool = Field(True, description="cosine scores divided by temperature (false: raw inner product)")
    temperature: float = Field(0.1, gt=0, description="softmax temperature of cosine scores")
    epochs: int = Field(10, ge=1, description="passes over the training targets")
    batch_size: int = Field(512, ge=2, description="targets per optimiser step")
    learning_rate: float = Field(0.01, gt=0, description="Adam / SparseAdam learning rate")
    threads: int = Field(1, ge=1, description="torch CPU threads; only 1 is bit-reproducible")
    progress: bool = Field(True, description="progress bar on stderr while training (terminals only)")
    side_columns: list[str] | None = Field(None, description="items columns used as side information; unset: "
                                                             "all but item_id and identifier-like text")
    user_columns: list[str] | None = Field(None, description="users columns used as attributes; unset: all "
                                                             "but user_id and identifier-like text")
    exclude_columns: list[str] = Field(default_factory=list, description="items or users columns never used")
    categorical_columns: list[str] = Field(default_factory=list,
                                           description="numeric columns embedded per value rather than bucketed")
    numeric_buckets: int = Field(10, ge=1, description="quantile buckets of numeric columns")
    max_distinct_share: float = Field(0.5, gt=0, le=1, description="text columns with more distinct values than "
                                                                   "this share of rows are skipped (titles, zips)")


# --------------------------------------------------------------------------------------
# Inputs: side information, user attributes, histories
# --------------------------------------------------------------------------------------


def _encoder_options(p: TwoTowerParams, columns: list[str] | None):
    """The attributes :func:`recall.channels.eges.side_info` reads from its params."""
    return SimpleNamespace(side_columns=columns, exclude_columns=p.exclude_columns,
                           categorical_columns=p.categorical_columns, numeric_buckets=p.numeric_buckets,
                           max_distinct_share=p.max_distinct_share)


def item_side(data: TrainData, p: TwoTowerParams):
    """The items' :class:`recall.channels.eges.SideInfo` (ID first, then side fields)."""
    from recall.channels.side_info import side_info

    return side_info(data.item_ids, data.items, _encoder_options(p, p.side_columns))


@dataclass
class UserAttributes:
    """Users-table attributes as tokens into one attribute table (no user-id column)."""

    fields: list[str]
    tokens: np.ndarray          # int64 (n_users, T); padding = n_rows - 1
    within: np.ndarray          # float32 (n_users, T): weight of each token inside its field
    column_field: np.ndarray    # int64 (T,): field 0 .. F-1 of each token column
    known: np.ndarray           # bool (n_users,): some attribute is known
    n_rows: int

    @property
    def n_fields(self) -> int:
        return len(self.fields)


def user_attributes(data: TrainData, p: TwoTowerParams) -> UserAttributes:
    """Encode the users table like EGES encodes items (the EGES encoder, with the id column dropped)."""
    from recall.channels.side_info import side_info

    n = data.n_users
    if data.users is None or data.users.width <= 1:
        return UserAttributes([], np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32),
                              np.zeros(0, np.int64), np.zeros(n, bool), 1)
    users = data.users.rename({S.USER: S.ITEM})
    side = side_info(data.user_ids.rename(S.ITEM), users, _encoder_options(p, p.user_columns))
    keep = side.column_field > 0
    # side_info's value table starts with one row per id; without the id those rows go.
    tokens = side.tokens[:, keep] - n
    return UserAttributes(side.fields, np.ascontiguousarray(tokens), np.ascontiguousarray(side.within[:, keep]),
                          side.column_field[keep] - 1, side.known, side.n_rows - n)


@dataclass
class Events:
    """The channel's events as flat arrays, sorted by user then time."""

    user: np.ndarray    # int64
    item: np.ndarray    # int64
    ts: np.ndarray      # float64 seconds
    weight: np.ndarray  # float32 behaviour weight
    start: np.ndarray   # int64: position of each event's user's first event
    targets: np.ndarray  # int64 positions of the training targets


def training_events(data: TrainData, p: TwoTowerParams) -> Events:
    """Flat event arrays and the target positions (see the module docstring)."""
    weights = data.triggers.behavior_weights
    bw = pl.DataFrame({S.BEHAVIOR: list(weights), "bw": [float(w) for w in weights.values()]}).with_columns(
        pl.col(S.BEHAVIOR).cast(data.events.schema[S.BEHAVIOR]))
    events = (data.events.filter(pl.col(S.BEHAVIOR).is_in(p.behaviors))
              .join(bw, on=S.BEHAVIOR).filter(pl.col("bw") > 0)
              .sort(UIDX, S.TS, IIDX)
              .with_columns(first=pl.int_range(pl.len()).over(UIDX, IIDX) == 0))
    user = events[UIDX].to_numpy().astype(np.int64)
    ts = events[S.TS].to_numpy().astype(np.float64)
    n = user.size
    start = np.zeros(n, dtype=np.int64)
    if n:
        boundary = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])
        start = np.repeat(boundary, np.diff(np.r_[boundary, n]))
    positions = np.arange(n, dtype=np.int64)
    window = data.triggers.window_days * DAY
    has_previous = positions > start
    previous_in_window = np.zeros(n, dtype=bool)
    previous_in_window[1:] = ts[1:] - ts[:-1] <= window
    is_target = has_previous & previous_in_window
    if p.new_items_only:
        is_target &= events["first"].to_numpy()
    return Events(user=user, item=events[IIDX].to_numpy().astype(np.int64), ts=ts,
                  weight=events["bw"].to_numpy().astype(np.float32), start=start,
                  targets=positions[is_target])


def history_at(ev: Events, positions: np.ndarray, length: int, window_days: float,
               half_life_days: float | None) -> tuple[np.ndarray, np.ndarray]:
    """The ``length`` latest events before each position: item indices and weights (0 = padding)."""
    back = positions[:, None] - np.arange(1, length + 1)[None, :]
    valid = back >= ev.start[positions][:, None]
    back = np.where(valid, back, positions[:, None])
    age = (ev.ts[positions][:, None] - ev.ts[back]) / DAY
    valid &= age <= window_days
    weights = np.where(valid, ev.weight[back] * halving(age, half_life_days), 0.0).astype(np.float32)
    return np.where(valid, ev.item[back], 0), weights


def serving_history(data: TrainData, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Each user's ``length`` strongest triggers (the i2i channels' trigger matrix): items, weights."""
    triggers = data.trigger_matrix.tocsr()
    rows = np.repeat(np.arange(data.n_users, dtype=np.int64), np.diff(triggers.indptr))
    order = np.lexsort((triggers.indices, -triggers.data, rows))
    rows, cols, values = rows[order], triggers.indices[order].astype(np.int64), triggers.data[order]
    rank = np.arange(rows.size) - triggers.indptr[rows]
    keep = rank < length
    items = np.zeros((data.n_users, length), dtype=np.int64)
    weights = np.zeros((data.n_users, length), dtype=np.float32)
    items[rows[keep], rank[keep]] = cols[keep]
    weights[rows[keep], rank[keep]] = values[keep]
    return items, weights


def adaptive_interests(lengths, k_max: int):
    """MIND's K_u = max(1, min(K_max, floor(log2 |I_u|))) for history lengths (numpy or torch)."""
    if isinstance(lengths, np.ndarray):
        return np.clip(np.floor(np.log2(np.maximum(lengths, 1))), 1, k_max).astype(np.int64)
    import torch

    return torch.clamp(torch.floor(torch.log2(torch.clamp(lengths.float(), min=1.0))), 1, k_max).long()


# --------------------------------------------------------------------------------------
# Model parts
# --------------------------------------------------------------------------------------


def build_towers(side, attrs: UserAttributes, p: TwoTowerParams, seed: int, mlp_input: int | None = None):
    """The item tower (ID + side fields) and the user-side parts (attribute table, MLP) as one module."""
    import torch

    class Towers(torch.nn.Module):
        def __init__(self):
            super().__init__()
            generator = torch.Generator().manual_seed(seed)
            self.values = torch.nn.Embedding(side.n_rows, p.dim, sparse=True, padding_idx=side.pad)
            self.attributes = torch.nn.Embedding(attrs.n_rows, p.attribute_dim, sparse=True,
                                                 padding_idx=attrs.n_rows - 1)
            with torch.no_grad():
                self.values.weight.normal_(0.0, 1.0 / math.sqrt(p.dim), generator=generator)
                self.values.weight[side.pad] = 0.0
                self.attributes.weight.normal_(0.0, 1.0 / math.sqrt(p.attribute_dim), generator=generator)
                self.attributes.weight[attrs.n_rows - 1] = 0.0
            self.register_buffer("tokens", torch.from_numpy(side.tokens))
            self.register_buffer("within", torch.from_numpy(side.within))
            self.register_buffer("user_tokens", torch.from_numpy(attrs.tokens))
            self.register_buffer("user_within", torch.from_numpy(attrs.within))
            self.register_buffer("user_field", torch.from_numpy(attrs.column_field))
            width = (mlp_input or p.dim) + attrs.n_fields * p.attribute_dim
            self.mlp = seeded_mlp(width, p.hidden, p.dim, seed)
            if p.residual:
                with torch.no_grad():  # start as the identity on the pooled history
                    self.mlp[-1].weight.mul_(0.1)
                    self.mlp[-1].bias.zero_()

        def item_vectors(self, items, id_mask=None):
            """ID + side-field embeddings of the items (batch x dim); ``id_mask`` zeroes the ID part."""
            within = self.within[items]
            if id_mask is not None:
                within = within.clone()
                within[:, 0] = within[:, 0] * id_mask
            return (within.unsqueeze(-1) * self.values(self.tokens[items])).sum(1)

        def user_features(self, users):
            """Concatenated attribute embeddings (batch x fields*attribute_dim); empty without a users table."""
            if attrs.n_fields == 0:
                return torch.zeros((users.shape[0], 0))
            embedded = self.user_within[users].unsqueeze(-1) * self.attributes(self.user_tokens[users])
            out = torch.zeros((users.shape[0], attrs.n_fields, p.attribute_dim))
            out.index_add_(1, self.user_field, embedded)
            return out.reshape(users.shape[0], -1)

        def head(self, pooled, features):
            """The MLP over [pooled, attributes], plus the pooled vector when residual."""
            out = self.mlp(torch.cat([pooled, features], dim=-1))
            return out + pooled if p.residual else out

    with GLOBAL_TORCH_RNG:  # nn.Embedding and nn.Linear draw their default initialisation from it
        return Towers()


def seeded_mlp(width: int, hidden: list[int], out: int, seed: int):
    """ReLU MLP ``width -> hidden... -> out``, initialised from ``seed`` (the global torch RNG is left alone)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # nn.Linear's default initialisation draws from the global generator
        layers, last = [], width
        for size in hidden:
            layers += [torch.nn.Linear(last, size), torch.nn.ReLU()]
            last = size
        layers.append(torch.nn.Linear(last, out))
        return torch.nn.Sequential(*layers)


def pooled_history(vectors, weights):
    """Weighted mean of history vectors (batch x L x dim, weights batch x L); zero without history."""
    total = weights.sum(1, keepdim=True)
    return (weights.unsqueeze(-1) * vectors).sum(1) / total.clamp(min=1e-12)


def log_uniform_probabilities(popularity: np.ndarray) -> np.ndarray:
    """Per-item probability of the log-uniform sampler over items ranked by ``popularity`` (desc)."""
    n = popularity.size
    order = np.lexsort((np.arange(n), -popularity))
    rank = np.empty(n, dtype=np.float64)
    rank[order] = np.arange(n)
    return np.log((rank + 2.0) / (rank + 1.0)) / np.log(n + 1.0)


class SampledSoftmax:
    """Sampled softmax with in-batch or log-uniform negatives and the logQ correction."""

    def __init__(self, p: TwoTowerParams, target_counts: np.ndarray, rng: np.random.Generator):
        self.p, self.rng = p, rng
        counts = target_counts.astype(np.float64)
        self.in_batch_q = np.log(np.maximum(counts, 1.0) / max(counts.sum(), 1.0))
        self.q = log_uniform_probabilities(counts)
        self.cdf = np.cumsum(self.q[np.lexsort((np.arange(counts.size), -counts))])
        self.ranked = np.lexsort((np.arange(counts.size), -counts))

    def negatives(self, targets: np.ndarray) -> np.ndarray:
        """The batch's shared candidate negatives (item indices)."""
        if self.p.negatives == "in_batch":
            return np.unique(targets)
        u = self.rng.random(self.p.num_negatives)
        at = np.minimum(np.searchsorted(self.cdf, u * self.cdf[-1], side="right"), self.cdf.size - 1)
        return np.unique(self.ranked[at])

    def loss(self, users, target_vectors, targets: np.ndarray, candidates: np.ndarray, candidate_vectors):
        """Mean cross-entropy of each target against the candidates (accidental hits masked)."""
        import torch

        p = self.p
        if p.normalize:
            users = torch.nn.functional.normalize(users, dim=-1)
            target_vectors = torch.nn.functional.normalize(target_vectors, dim=-1)
            candidate_vectors = torch.nn.functional.normalize(candidate_vectors, dim=-1)
        scale = 1.0 / p.temperature if p.normalize else 1.0
        positive = (users * target_vectors).sum(-1) * scale
        negative = users @ candidate_vectors.T * scale
        if p.logq:
            if p.negatives == "in_batch":
                positive = positive - torch.from_numpy(self.in_batch_q[targets]).float()
                negative = negative - torch.from_numpy(self.in_batch_q[candidates]).float()
            else:
                size = float(p.num_negatives)
                positive = positive - torch.from_numpy(np.log(size * self.q[targets])).float()
                negative = negative - torch.from_numpy(np.log(size * self.q[candidates])).float()
        hit = torch.from_numpy(targets[:, None] == candidates[None, :])
        negative = negative.masked_fill(hit, float("-inf"))
        logits = torch.cat([positive.unsqueeze(1), negative], dim=1)
        return torch.nn.functional.cross_entropy(logits, torch.zeros(len(targets), dtype=torch.long))


class Progress:
    """A rich progress bar on stderr while training, only on a terminal and when enabled."""

    def __init__(self, name: str, total: int, enabled: bool):
        self.bar = None
        if enabled and total and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeElapsedColumn

            self.bar = Bar(TextColumn(f"  {name}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                           TextColumn("{task.fields[loss]}"), console=Console(stderr=True), transient=True)
            self.task = self.bar.add_task(name, total=total, loss="")

    def __enter__(self):
        if self.bar is not None:
            self.bar.__enter__()
        return self

    def advance(self, loss: float | None = None):
        if self.bar is not None:
            self.bar.update(self.task, advance=1, loss="" if loss is None else f"loss {loss:.4f}")

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)


@dataclass
class TrainLog:
    losses: list[float]
    examples: int
    seconds: float
    steady_examples_per_second: float = 0.0  # after the first step (torch imports its optimiser machinery lazily)


def train_model(model, user_vector, ev: Events, data: TrainData, p: TwoTowerParams, name: str) -> TrainLog:
    """The shared training loop: batches of targets, their histories, the sampled softmax.

    ``user_vector(users, hist_vectors, hist_weights, target_vectors)`` returns the
    batch's user vectors (MIND attends over its interests with the target there).
    """
    import torch

    started = time.perf_counter()
    rng = np.random.default_rng(data.seed)
    counts = np.bincount(ev.item[ev.targets], minlength=data.n_items)
    softmax = SampledSoftmax(p, counts, rng)
    sparse = [model.values.weight, model.attributes.weight]
    dense = [w for w in model.parameters() if all(w is not s for s in sparse)]
    optimizers = [torch.optim.SparseAdam(sparse, lr=p.learning_rate)]
    if dense:
        optimizers.append(torch.optim.Adam(dense, lr=p.learning_rate))
    window, half_life = data.triggers.window_days, data.triggers.half_life_days
    n = ev.targets.size
    steps = math.ceil(n / p.batch_size) if n else 0
    losses = []
    warm = None  # (time after the first step, examples since)
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(p.threads)
    try:
        with Progress(name, steps * p.epochs, p.progress) as bar:
            for epoch in range(p.epochs if n else 0):
                order = ev.targets[rng.permutation(n)]
                total = 0.0
                for lo in range(0, n, p.batch_size):
                    positions = order[lo:lo + p.batch_size]
                    if positions.size < 2:
                        continue
                    items, weights = history_at(ev, positions, p.max_history, window, half_life)
                    targets = ev.item[positions]
                    candidates = softmax.negatives(targets)
                    # Every item of the batch goes through the tower once (sparse gradients stay small).
                    everything = np.concatenate([items.ravel(), targets, candidates])
                    unique, inverse = np.unique(everything, return_inverse=True)
                    vectors = model.item_vectors(torch.from_numpy(unique))
                    inverse = torch.from_numpy(inverse)
                    b, length = items.shape
                    hist = vectors[inverse[:b * length]].reshape(b, length, -1)
                    target_vectors = vectors[inverse[b * length:b * length + b]]
                    candidate_vectors = vectors[inverse[b * length + b:]]
                    users = user_vector(torch.from_numpy(ev.user[positions]), hist, torch.from_numpy(weights),
                                        target_vectors)
                    loss = softmax.loss(users, target_vectors, targets, candidates, candidate_vectors)
                    for opt in optimizers:
                        opt.zero_grad(set_to_none=True)
                    loss.backward()
                    for opt in optimizers:
                        opt.step()
                    total += loss.item() * positions.size
                    bar.advance(loss.item())
                    if warm is None:
                        warm = (time.perf_counter(), 0)
                    else:
                        warm = (warm[0], warm[1] + positions.size)
                losses.append(round(total / n, 5))
                log.info("channel %s: epoch %d/%d, loss %.4f", name, epoch + 1, p.epochs, losses[-1])
    finally:
        torch.set_num_threads(saved_threads)
    finished = time.perf_counter()
    steady = warm[1] / (finished - warm[0]) if warm and finished > warm[0] else 0.0
    return TrainLog(losses, int(n * len(losses)), finished - started, steady)


def final_item_vectors(model, side, trained: np.ndarray, block: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Every item's tower vector (cold items: side fields only) and the mask of items with one."""
    import torch

    out = np.zeros((side.n_items, model.values.weight.shape[1]), dtype=np.float32)
    with torch.no_grad():
        for lo in range(0, side.n_items, block):
            items = torch.arange(lo, min(lo + block, side.n_items))
            mask = torch.from_numpy(trained[lo:lo + block].astype(np.float32))
            out[lo:lo + block] = model.item_vectors(items, id_mask=mask).numpy()
    has = trained | side.known
    out[~has] = 0.0
    return out, has


def serving_inputs(data: TrainData, p: TwoTowerParams, trained: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per user: the history items and weights the serving user tower pools (the trigger matrix)."""
    items, weights = serving_history(data, p.max_history)
    # Only items the tower learned can be history (a cold item's ID embedding is untrained).
    weights = np.where(trained[items], weights, 0.0).astype(np.float32)
    return items, weights


class LearnedChannel(Channel):
    """Shared fit / recommend plumbing of the learned u2i channels."""

    Params = TwoTowerParams
    exclude_interacted: ClassVar[bool] = True
    fit_cost = 3

    def facts(self) -> dict:
        log_ = self.train_log_
        return {"losses": log_.losses, "epochs": len(log_.losses), "examples": log_.examples,
                "examples_per_second": round(log_.steady_examples_per_second),
                "train_seconds": round(log_.seconds, 2), "fit_seconds": round(self.fit_seconds_, 2),
                "items_indexed": int(self.index_.size), "users_with_vector": int(self.users_with_vector_),
                "side_fields": list(self.side_.fields), "user_attributes": list(self.attributes_.fields)}

    def _prepare(self, data: TrainData):
        p = self.params
        self.side_ = item_side(data, p)
        self.attributes_ = user_attributes(data, p)
        self.events_ = training_events(data, p)
        trained = np.zeros(data.n_items, dtype=bool)
        trained[self.events_.item] = True
        self.trained_ = trained


class YouTubeDNN(LearnedChannel):
    """YouTube DNN two-tower u2i (see the module docstring).

    Learned state: ``model_`` (torch module), ``item_vectors_``, ``user_vectors_``,
    ``index_``, ``train_log_`` (losses per epoch, examples, seconds).
    """

    name = "youtubednn"
    description = "YouTube DNN two-tower: pooled history + user attributes MLP, item ID + side info, sampled softmax"
    Params = TwoTowerParams

    def fit(self, data: TrainData) -> "YouTubeDNN":
        import torch

        started = time.perf_counter()
        p = self.params
        self._prepare(data)
        model = build_towers(self.side_, self.attributes_, p, data.seed)

        def user_vector(users, hist, weights, _targets):
            return model.head(pooled_history(hist, weights), model.user_features(users))

        self.train_log_ = train_model(model, user_vector, self.events_, data, p, self.name)
        self.model_ = model
        vectors, has = final_item_vectors(model, self.side_, self.trained_)
        items, weights = serving_inputs(data, p, self.trained_)
        users = np.zeros((data.n_users, p.dim), dtype=np.float32)
        active = (weights.sum(1) > 0) | self.attributes_.known
        saved = torch.get_num_threads()
        torch.set_num_threads(p.threads)
        try:
            with torch.no_grad():
                for lo in range(0, data.n_users, p.query_block):
                    rows = np.arange(lo, min(lo + p.query_block, data.n_users))
                    hist = torch.from_numpy(vectors[items[rows]])
                    pooled = pooled_history(hist, torch.from_numpy(weights[rows]))
                    users[rows] = model.head(pooled, model.user_features(torch.from_numpy(rows))).numpy()
        finally:
            torch.set_num_threads(saved)
        users[~active] = 0.0
        if p.normalize:
            vectors, users = normalise_rows(vectors), normalise_rows(users)
        self.item_vectors_, self.user_vectors_ = vectors, users
        self.users_with_vector_ = int(active.sum())
        indexed = np.flatnonzero(has)
        self.index_ = VectorIndex.build(vectors[indexed], indexed, p)
        self.fit_seconds_ = time.perf_counter() - started
        return self

    def recommend(self, data: TrainData, n: int, users: np.ndarray | None = None) -> pl.DataFrame:
        return search_queries(data, self.index_, lambda rows: self.user_vectors_[rows], n,
                              exclude_interacted=self.exclude_interacted, user_block=self.params.user_block,
                              users=users)


__all__ = ["LearnedChannel", "TwoTowerParams", "YouTubeDNN", "adaptive_interests", "history_at",
           "log_uniform_probabilities", "serving_history", "training_events", "user_attributes"]
