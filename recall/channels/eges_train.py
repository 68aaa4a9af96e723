"""EGES training with hand-written gradients: skip-gram with negative sampling, no autograd.

The model is EGES as published (Wang et al., KDD 2018, section 2.4; see
:mod:`recall.channels.eges`): ``H_v = sum_j softmax(a_v)_j W_j(v)``, a context
table ``Z``, and for a centre v with context u the loss
``-log sigma(H_v . Z_u) - sum_k log sigma(-H_v . Z_{n_k})``. The batches
(centre-major, shared negatives as one matmul), the producer thread and the
Hogwild trainer threads are :mod:`recall.sgns`'s, shared with DeepWalk and
Node2Vec; this module adds what is EGES's own:

**Hand-written gradients.** The forward quantities are reused for the backward
pass (``sigma(s) - 1`` for positives, ``sigma(s)`` for negatives; the chain rule
through the attention softmax in closed form), so a step is some 30 tensor
operations and nothing is recorded for autograd. ``H_v`` is computed once per
centre for all its pairs.

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

Each torch op runs on its calling thread, so two Hogwild workers use two
cores, where more intra-op threads for one trainer gained 1.2x (an op on a
4,096-pair batch is too small to split well).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from recall.channels.side_info import SideInfo
from recall.sgns import Batch, Vocabulary, run_batches, sgns_gradients


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
    vocabulary = Vocabulary.of(walks, side.n_items, p.min_count, p.ns_exponent, p.sample)
    n_items, dim, trained = side.n_items, p.dim, vocabulary.trained
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
    tokens = torch.from_numpy(side.tokens)
    within = torch.from_numpy(side.within)
    column_field = torch.from_numpy(side.column_field)
    field_onehot = torch.nn.functional.one_hot(column_field, side.n_fields + 1).float()  # T x (F + 1)
    optimiser = EGESOptimiser(values, context, logits, side.pad, p.learning_rate, p.context_learning_rate)

    def eges_step(batch: Batch, decay: float) -> tuple[float, int]:
        return step(values, context, logits, tokens, within, column_field, field_onehot, batch.centres,
                    batch.contexts, batch.pairs_per_centre, batch.negatives, p.negative, optimiser, decay,
                    batch.with_loss)

    losses, pairs = run_batches(vocabulary, p, seed, eges_step)
    return TrainResult(tables, trained, losses, pairs, time.perf_counter() - started)


def step(values, context, logits, tokens, within, column_field, field_onehot, centres, contexts, n_pairs,
         negatives, K: int, optimiser, decay: float, with_loss: bool = True) -> tuple[float, int]:
    """One optimiser step on a batch of centres sharing ``negatives`` (S,); returns (summed loss, pairs).

    The loss is 0.0 unless ``with_loss`` (:data:`recall.sgns.LOSS_EVERY`).

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
    loss, flat_ctx, d_h, d_z, d_zn = sgns_gradients(h, context, contexts, negatives, n_pairs, K,
                                                    with_loss=with_loss)
    d_values = column_weights.unsqueeze(2) * d_h.unsqueeze(1)          # b x T x D
    grads = [(flat_tok, d_values.view(-1, dim)),
             (torch.cat([flat_ctx, negatives]), torch.cat([d_z, d_zn]))]
    if logits is not None:
        d_columns = (embedded * d_h.unsqueeze(1)).sum(2).mul_(centre_within)   # b x T
        d_alpha = d_columns @ field_onehot                   # b x (F + 1)
        grads.append((centres, alpha * (d_alpha - (alpha * d_alpha).sum(1, keepdim=True))))
    optimiser.step(grads, decay)
    return loss, int(n_pairs.sum())


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
        # Scaled first: index_add_ with alpha= is 3x slower than without (a 8k-row batch: 0.8 vs 0.25 ms).
        self.context.index_add_(0, context_rows, context_grads * (-self.context_learning_rate * decay))
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


__all__ = ["EGESOptimiser", "EGESTables", "LazyAdam", "TrainResult", "final_vectors", "train"]
