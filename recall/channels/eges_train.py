"""EGES training with hand-written gradients: skip-gram with negative sampling, no autograd.

The model is EGES as published (Wang et al., KDD 2018, section 2.4; see
:mod:`recall.channels.eges`): ``H_v = sum_j softmax(a_v)_j W_j(v)``, a context
table ``Z``, and for a centre v with context u the loss
``-log sigma(H_v . Z_u) - sum_k log sigma(-H_v . Z_{n_k})``. What makes it fast:

**Centre-major batches.** A batch is a set of centre positions of the walks,
each with its up to ``2 window`` contexts (word2vec's shrunk window,
``1 .. window`` per centre). ``H_v`` is computed once per centre and serves all
its pairs, as in word2vec, instead of once per pair.

**Shared negatives, as one matmul.** All centres of a batch share one set of
``shared_negatives`` negatives drawn from ``count^ns_exponent``; their scores are
one matrix product (centres x negatives). A centre with ``n`` pairs weighs each
shared negative ``n K / S`` (K = ``negative``, S = ``shared_negatives``), so the
expected loss and gradient equal those of K independent negatives per pair;
only their variance differs (smaller: S > K distinct negatives per centre).

**Hand-written gradients.** The forward quantities are reused for the backward
pass (``sigma(s) - 1`` for positives, ``sigma(s)`` for negatives; the chain rule
through the attention softmax in closed form), so a step is some 30 tensor
operations and nothing is recorded for autograd.

**Adam on the input side, word2vec's SGD on the context table.** The ID and
side-value embeddings and the attention logits (the EGES part: a category row
sums the gradients of every centre of that category in a batch) take a lazy
Adam on the touched rows: gradients summed per distinct row (``torch.unique``,
one ``index_add_``), then ``torch.optim.SparseAdam``'s update of those rows. The
context table, which a batch touches ten times more often (every context and
every shared negative), takes word2vec's plain SGD step, one ``index_add_``
with duplicates summed. On the walks of the 5M-event benchmark log this is
about 3x the pairs per second of Adam on every table, and 5 epochs reach the
loss Adam reached in 3 (BENCHMARKS.md, issue 15); plain SGD on the input side
diverges at the step sizes that learn as fast (shared side rows).

**A producer thread.** Walk blocks are down-sampled, windowed and turned into
batches (centres, contexts, negatives) by numpy in a second thread while torch
trains on the previous block; numpy and torch both release the GIL. Batches
come in a fixed order from one seeded generator, so with ``workers = 1`` the
result does not depend on timing and is bit-reproducible.

**Hogwild trainer threads.** ``workers > 1`` runs that many trainer threads,
each taking the next batch from the producer and updating the shared tables
without locks, as word2vec's and gensim's workers do (Recht et al., "Hogwild!",
NIPS 2011: sparse updates rarely collide, and a collision loses one row's
update). Each torch op runs on its calling thread, so two workers use two
cores, where more intra-op threads for one trainer gained 1.2x (an op on a
4,096-pair batch is too small to split well). The batches and the learning-rate
schedule are the same; the order the updates land in is not, so the tables
differ run to run (as gensim's with several workers).
"""

from __future__ import annotations

import math
import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

from recall.channels.side_info import SideInfo
from recall.errors import RecallError


@dataclass
class EGESTables:
    """Learned tables: ``values`` (IDs and side values, padding row last), ``context`` and attention ``logits``."""

    values: np.ndarray           # float32 (n_rows, dim)
    context: np.ndarray          # float32 (n_items, dim)
    logits: np.ndarray | None    # float32 (n_items, n_fields + 1); None for GES (equal weights)

    def field_weights(self, side: SideInfo) -> np.ndarray:
        """softmax(a_v) per item, the ID first; equal weights for GES."""
        if self.logits is None:
            return np.full((side.n_items, side.n_fields + 1), 1.0 / (side.n_fields + 1), dtype=np.float32)
        shifted = self.logits - self.logits.max(axis=1, keepdims=True)
        weights = np.exp(shifted)
        return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


@dataclass
class TrainResult:
    """The learned tables and what the training saw."""

    tables: EGESTables
    trained: np.ndarray         # bool (n_items,): the item is on a walk (after min_count)
    losses: list[float]         # mean loss per pair, per epoch
    pairs: int                  # pairs trained on, over all epochs
    seconds: float              # training wall time (batch generation included)


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


def centre_contexts(walks: np.ndarray, window: int, reach: np.ndarray | None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Every centre position of -1-padded walks with its contexts: ``(centres (M,), contexts (M, 2 window))``.

    Context column ``j`` is the position ``t - window + j`` (``j < window``) or
    ``t + j - window + 1``; it is -1 where that position is padding, outside the
    walk or beyond the centre's ``reach`` (word2vec's shrunk window). Centres
    without any context are left out.
    """
    n, length = walks.shape
    padded = np.full((n, length + 2 * window), -1, dtype=np.int32)
    padded[:, window:window + length] = walks
    offsets = np.r_[np.arange(-window, 0), np.arange(1, window + 1)]
    valid = walks >= 0
    rows, cols = np.nonzero(valid)
    contexts = padded[rows[:, None], cols[:, None] + window + offsets]
    if reach is not None:
        contexts[np.abs(offsets)[None, :] > reach[rows, cols][:, None]] = -1
    keep = (contexts >= 0).any(axis=1)
    return walks[rows[keep], cols[keep]].astype(np.int64), contexts[keep]


def train(walks: np.ndarray, side: SideInfo, p, seed: int) -> TrainResult:
    """Skip-gram with negative sampling over the walks (see the module docstring); ``p`` is an ``EGESParams``.

    Items seen fewer than ``min_count`` times are removed from the walks (they are
    cold). Each epoch shuffles the walks and takes ``walk_block`` of them at a
    time: frequent items down-sampled (``sample``), centres with their contexts
    generated at once, shuffled, and trained in batches of about ``batch_size``
    pairs. The learning rate decays linearly from ``learning_rate`` to
    ``min_learning_rate`` over the walks of all epochs, as in word2vec.
    """
    import torch

    started = time.perf_counter()
    walks = np.asarray(walks)
    if walks.ndim != 2:
        raise RecallError("walks must be a 2-d array (walks x length)")
    n_items, dim = side.n_items, p.dim
    counts = np.bincount(walks[walks >= 0].ravel(), minlength=n_items)
    if p.min_count > 1:
        walks = compact(walks, counts[np.maximum(walks, 0)] >= p.min_count)
        counts = np.where(counts >= p.min_count, counts, 0)
    trained = counts > 0
    generator = torch.Generator().manual_seed(seed)
    # word2vec's initialisation: small random inputs, zero outputs. One extra context row
    # (index n_items) stands for "no context" and is never updated.
    values = torch.empty(side.n_rows, dim).uniform_(-0.5 / dim, 0.5 / dim, generator=generator)
    values[side.pad] = 0.0
    context = torch.zeros(n_items + 1, dim)
    logits = torch.zeros(n_items, side.n_fields + 1) if p.attention else None
    tables = EGESTables(values=values.numpy(), context=context[:n_items].numpy(),
                        logits=None if logits is None else logits.numpy())
    if not trained.any():
        return TrainResult(tables, trained, [], 0, time.perf_counter() - started)
    weights = np.where(trained, counts.astype(np.float64) ** p.ns_exponent, 0.0)
    cdf = np.cumsum(weights) / weights.sum()
    cdf[np.flatnonzero(weights)[-1]:] = 1.0  # rounding must not leave room for a draw past the last item
    keep = keep_probability(counts.astype(np.float64), p.sample)

    tokens = torch.from_numpy(side.tokens)
    within = torch.from_numpy(side.within)
    column_field = torch.from_numpy(side.column_field)
    field_onehot = torch.nn.functional.one_hot(column_field, side.n_fields + 1).float()  # T x (F + 1)
    optimiser = EGESOptimiser(values, context, logits, side.pad, p.learning_rate, p.context_learning_rate)
    shared, K = p.shared_negatives, p.negative
    n_walks = walks.shape[0]
    threads = torch.get_num_threads()  # restored at the end: a trainer's setting leaks to later threads
    batches: queue.Queue = queue.Queue(maxsize=2 + 2 * p.workers)
    stop = threading.Event()

    def produce() -> None:
        """Batches in training order: (epoch, progress, centres, contexts, pairs per centre, negatives)."""
        rng = np.random.default_rng(seed)
        try:
            for epoch in range(p.epochs):
                order = rng.permutation(n_walks)
                for lo in range(0, n_walks, p.walk_block):
                    block = walks[order[lo:lo + p.walk_block]]
                    if p.sample > 0:
                        block = compact(block, rng.random(block.shape) < keep[np.maximum(block, 0)])
                    reach = rng.integers(1, p.window + 1, size=block.shape) if p.shrink_window else None
                    centres, contexts = centre_contexts(block, p.window, reach)
                    if centres.size == 0:
                        continue
                    shuffle = rng.permutation(centres.size)
                    centres, contexts = centres[shuffle], contexts[shuffle]
                    pairs_per_centre = (contexts >= 0).sum(axis=1)
                    size = max(1, p.batch_size // max(1, int(pairs_per_centre.mean())))
                    n_batches = -(-centres.size // size)
                    negatives = draw_negatives(cdf, (n_batches, shared), rng)
                    contexts = np.where(contexts >= 0, contexts, n_items).astype(np.int64)
                    for b in range(n_batches):
                        if stop.is_set():
                            return
                        part = slice(b * size, (b + 1) * size)
                        progress = (epoch * n_walks + lo + block.shape[0] * b / n_batches) / (p.epochs * n_walks)
                        batches.put((epoch, progress, torch.from_numpy(centres[part]),
                                     torch.from_numpy(contexts[part]),
                                     torch.from_numpy(pairs_per_centre[part].astype(np.float32)),
                                     torch.from_numpy(negatives[b])))
        finally:
            batches.put(None)

    epoch_loss = [0.0] * p.epochs
    epoch_pairs = [0] * p.epochs
    tally = threading.Lock()
    errors: list[BaseException] = []

    def consume() -> None:
        """Train on batches until the producer's end mark, which is passed on to the other trainers."""
        torch.set_num_threads(1)  # per thread: OpenMP keeps the thread count per calling thread
        try:
            with torch.no_grad():
                while (item := batches.get()) is not None:
                    if stop.is_set():
                        continue  # drain: another trainer failed
                    epoch, progress, centres, contexts, n_pairs, negatives = item
                    decay = 1.0 + (p.min_learning_rate / p.learning_rate - 1.0) * progress
                    loss, pairs = step(values, context, logits, tokens, within, column_field, field_onehot,
                                       centres, contexts, n_pairs, negatives, K, optimiser, decay)
                    with tally:
                        epoch_loss[epoch] += loss
                        epoch_pairs[epoch] += pairs
            batches.put(None)
        except BaseException as error:  # noqa: BLE001  (re-raised by train once every thread has stopped)
            errors.append(error)
            stop.set()

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    trainers = [threading.Thread(target=consume, daemon=True) for _ in range(p.workers)]
    try:
        for trainer in trainers:
            trainer.start()
        for trainer in trainers:
            trainer.join()
    finally:
        stop.set()
        while producer.is_alive():  # unblock a producer waiting on a full queue
            try:
                batches.get(timeout=0.1)
            except queue.Empty:
                pass
        torch.set_num_threads(threads)
    if errors:
        raise errors[0]
    losses = [loss / pairs for loss, pairs in zip(epoch_loss, epoch_pairs) if pairs]
    return TrainResult(tables, trained, losses, sum(epoch_pairs), time.perf_counter() - started)


def step(values, context, logits, tokens, within, column_field, field_onehot, centres, contexts, n_pairs,
         negatives, K: int, optimiser, decay: float) -> tuple[float, int]:
    """One optimiser step on a batch of centres sharing ``negatives`` (S,); returns (summed loss, pairs).

    The gradients handed to ``optimiser.step`` are those of the summed loss of the
    batch's pairs: ``[(value rows, grads), (context rows, grads), (centres, logit grads)]``.
    """
    import torch

    b, dim = centres.shape[0], values.shape[1]
    flat_tok = tokens.index_select(0, centres).reshape(-1)
    embedded = values.index_select(0, flat_tok).view(b, -1, dim)       # b x T x D
    centre_within = within.index_select(0, centres)
    if logits is not None:
        alpha = torch.softmax(logits.index_select(0, centres), dim=1)  # b x (F + 1)
        column_weights = alpha.index_select(1, column_field).mul_(centre_within)
    else:
        column_weights = centre_within / field_onehot.shape[1]
    # Per-centre products of a few vectors: elementwise and summed (bmm over tiny matrices is slow).
    h = (column_weights.unsqueeze(2) * embedded).sum(1)     # b x D
    flat_ctx = contexts.reshape(-1)
    z = context.index_select(0, flat_ctx).view(b, -1, dim)  # b x 2W x D
    mask = (contexts != context.shape[0] - 1).to(h.dtype)
    pos = torch.sigmoid((z * h.unsqueeze(1)).sum(2))        # b x 2W
    pairs = int(n_pairs.sum())
    zn = context.index_select(0, negatives)                 # S x D
    neg = torch.sigmoid(h @ zn.T)                           # b x S
    weight = (n_pairs * (K / negatives.shape[0])).unsqueeze(1)         # a centre's n pairs weigh each K n / S
    loss = float(-(torch.log(pos.clamp_min(1e-7)) * mask).sum()
                 - (torch.log1p(-neg.clamp_max(1 - 1e-7)) * weight).sum())
    g_pos = (pos - 1.0).mul_(mask)                          # dLoss/dscore: b x 2W
    g_neg = neg.mul_(weight)                                # b x S
    d_h = (g_pos.unsqueeze(2) * z).sum(1).addmm_(g_neg, zn)
    d_z = g_pos.unsqueeze(2) * h.unsqueeze(1)               # b x 2W x D
    d_zn = g_neg.T @ h                                      # S x D
    d_values = column_weights.unsqueeze(2) * d_h.unsqueeze(1)          # b x T x D
    grads = [(flat_tok, d_values.view(-1, dim)),
             (torch.cat([flat_ctx, negatives]), torch.cat([d_z.view(-1, dim), d_zn]))]
    if logits is not None:
        d_columns = (embedded * d_h.unsqueeze(1)).sum(2).mul_(centre_within)   # b x T
        d_alpha = d_columns @ field_onehot                   # b x (F + 1)
        grads.append((centres, alpha * (d_alpha - (alpha * d_alpha).sum(1, keepdim=True))))
    optimiser.step(grads, decay)
    return loss, pairs


class EGESOptimiser:
    """Lazy Adam on the value table and attention logits, plain SGD on the context table.

    ``step(grads, decay)`` takes the row gradients of :func:`step` and the
    learning-rate factor of the schedule (1 at the start, ``min / initial`` at the
    end); the padding value row and the "no context" row are never updated.
    """

    def __init__(self, values, context, logits, pad: int, learning_rate: float, context_learning_rate: float):
        self.context = context
        self.learning_rate, self.context_learning_rate = learning_rate, context_learning_rate
        self.adam = LazyAdam([values] + ([logits] if logits is not None else []),
                             skip=[pad] + ([-1] if logits is not None else []))

    def step(self, grads, decay: float) -> None:
        (value_rows, value_grads), (context_rows, context_grads), *attention = grads
        self.adam.step([(value_rows, value_grads), *attention], self.learning_rate * decay)
        self.context.index_add_(0, context_rows, context_grads, alpha=-self.context_learning_rate * decay)
        self.context[-1] = 0.0  # the "no context" row (its gradients are masked to zero; kept exact)


class LazyAdam:
    """Adam on the rows a step touches (``torch.optim.SparseAdam``'s update), without autograd.

    ``step([(rows, row_gradients), ...], lr)`` sums the gradients per distinct
    row, then updates those rows' moments and values; the bias correction uses
    the global step count, as SparseAdam does. ``skip`` names a row per table
    that is never updated (a padding row; -1 for none).
    """

    def __init__(self, params, skip, betas=(0.9, 0.999), eps=1e-8):
        import torch

        self.params = params
        self.skip = skip
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        self.count = 0

    def step(self, grads, lr: float) -> None:
        import torch

        self.count += 1
        correction = lr * math.sqrt(1 - self.beta2 ** self.count) / (1 - self.beta1 ** self.count)
        for param, avg, sq, skip, (rows, values) in zip(self.params, self.exp_avg, self.exp_avg_sq, self.skip,
                                                        grads):
            unique, inverse = torch.unique(rows, return_inverse=True)
            grad = torch.zeros(unique.shape[0], param.shape[1]).index_add_(0, inverse, values)
            if skip >= 0:
                keep = unique != skip
                unique, grad = unique[keep], grad[keep]
            old = avg.index_select(0, unique)
            m = grad.sub(old).mul_(1 - self.beta1).add_(old)
            old = sq.index_select(0, unique)
            v = grad.mul_(grad).sub_(old).mul_(1 - self.beta2).add_(old)
            avg.index_copy_(0, unique, m)
            sq.index_copy_(0, unique, v)
            param.index_add_(0, unique, m.div_(v.sqrt().add_(self.eps)).mul_(-correction))


def final_vectors(result: TrainResult, side: SideInfo, cold_weights: str
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """H for every item (float32, not normalised), the mask of items with a vector, and the weights used.

    Trained items use their own softmax(a_v) over the ID and side fields; cold
    items (never on a walk) use only their side fields, weighted per
    ``cold_weights``. The weights returned are ``n_items x (n_fields + 1)``, the ID
    first; an item without a vector (cold and no known side value) has a zero vector.
    """
    weights = result.tables.field_weights(side)
    cold = ~result.trained
    if side.n_fields and cold.any():
        if cold_weights == "attention" and result.trained.any():
            side_weights = weights[result.trained, 1:].mean(axis=0)
        else:
            side_weights = np.ones(side.n_fields, dtype=np.float32)
        weights[cold, 0] = 0.0
        weights[cold, 1:] = side_weights / side_weights.sum()
    column_weights = weights[:, side.column_field] * side.within
    values = result.tables.values
    vectors = np.einsum("nt,ntd->nd", column_weights, values[side.tokens])
    has_vector = result.trained | side.known
    vectors = np.where(has_vector[:, None], vectors, np.float32(0))
    return np.ascontiguousarray(vectors, dtype=np.float32), has_vector, weights


__all__ = ["EGESOptimiser", "EGESTables", "LazyAdam", "TrainResult", "centre_contexts", "compact", "draw_negatives",
           "final_vectors", "keep_probability", "train"]
