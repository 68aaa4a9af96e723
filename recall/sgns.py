"""Batched skip-gram with negative sampling over -1-padded walks: PyTorch on CPU, hand-written gradients.

Two models train here. DeepWalk and Node2Vec use :func:`train_vectors`: an input
and a context table over item IDs, word2vec's SGD on both, as gensim's skip-gram.
EGES (:mod:`recall.channels.eges_train`) puts side information and attention on
the input side and brings its own step and optimiser to :func:`run_batches`.
Both share what makes them fast:

**Centre-major batches.** A batch is a set of centre positions of the walks,
each with its up to ``2 window`` contexts (word2vec's shrunk window,
``1 .. window`` per centre). A centre's input vector is read once for all its
pairs, as in word2vec, instead of once per pair. A batch's centres share one
context span (:func:`span_groups`), so it carries ``2 span`` context columns
rather than ``2 window`` mostly padded ones.

**Shared negatives, as one matmul.** All centres of a batch share one set of
``shared_negatives`` negatives drawn from ``count^ns_exponent``; their scores are
one matrix product (centres x negatives). A centre with ``n`` pairs weighs each
shared negative ``n K / S`` (K = ``negative``, S = ``shared_negatives``), so the
expected loss and gradient equal those of K independent negatives per pair;
only their variance differs.

**Rows gathered and scattered in bulk.** gensim's C loop is bound by memory
latency on these corpora: each pair reads and writes 1 + ``negative`` random rows
one after the other (Taobao walks, 47k items: 113k tokens/s; on a 1,000-item
vocabulary the same loop runs 2.9x faster). A batch reads its rows with one
``index_select`` and writes them with one ``index_add_``, and its negatives are
S rows in cache: 3-4x gensim's tokens/s on one thread (BENCHMARKS.md, issue 15).

**A producer thread.** Walk blocks are down-sampled, windowed and turned into
batches (centres, contexts, negatives) by numpy in a second thread while torch
trains on the previous block; numpy and torch both release the GIL. A block's
batches pass to the trainers as one queue item: handing over each batch (a
thread wake-up) took DeepWalk's epoch on the Taobao walks from 3.4 s to 4.6 s. Batches
come in a fixed order from one seeded generator, so with ``workers = 1`` the
result does not depend on timing and is bit-reproducible.

**Hogwild trainer threads.** ``workers > 1`` runs that many trainer threads,
each taking the next batch from the producer and updating the shared tables
without locks, as word2vec's and gensim's workers do (Recht et al., "Hogwild!",
NIPS 2011: sparse updates rarely collide, and a collision loses one row's
update). The batches and the learning-rate schedule are the same; the order the
updates land in is not, so the tables differ run to run.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
from pydantic import BaseModel, Field

from recall.errors import RecallError


class BatchParams(BaseModel):
    """How the batched trainer cuts the walks into optimiser steps."""

    batch_size: int = Field(4096, ge=1, description="pairs per optimiser step, about (smaller: more updates, "
                                                    "slower)")
    shared_negatives: int = Field(64, ge=1, description="negatives shared by the centres of a batch (each weighs "
                                                        "negative / shared_negatives per pair)")
    shrink_window: bool = Field(True, description="draw each centre's window from 1..window, as word2vec "
                                                  "(fewer pairs, near contexts weigh more)")
    walk_block: int = Field(20_000, ge=1, description="walks whose pairs are generated at once (memory: "
                                                      "about 2 x window x walk_length x this many contexts)")
    max_batch_repeats: float = Field(16.0, gt=0, description="plain SGD trainer: batches hold fewer pairs than "
                                                             "batch_size where the most frequent item would be "
                                                             "a context more often than this in one batch")


# --------------------------------------------------------------------------------------
# Pairs and sampling (numpy)
# --------------------------------------------------------------------------------------


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


def span_groups(walks: np.ndarray, window: int, reach: np.ndarray | None
                ) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Every centre position of tail-padded walks with its contexts, grouped by span: ``[(span, centres, contexts)]``.

    ``walks`` are -1 padded at the tail only (as walks and :func:`compact` leave
    them). A centre at position ``t`` of a walk of ``n`` items reaches
    ``left = min(r, t)`` items back and ``right = min(r, n - 1 - t)`` forward,
    ``r`` its ``reach`` (word2vec's shrunk window, ``1..window``; None: ``window``).
    Its span is ``max(left, right)``; the centres of span ``s`` come with the
    ``2 s`` context columns ``t - s .. t + s`` (centre left out, int32), -1 past
    the walk's ends. No column lies beyond a centre's reach: a side cut short by
    the reach is the longer side, so the span is the reach. With the shrunk window the
    groups' columns are on average 0.6 of ``2 window``: the padding of one block of
    ``2 window`` columns was most of a step's gathers and scatters. Centres with
    no context (one-item walks) are left out; each group lists its centres in walk order.
    """
    n, length = walks.shape
    valid = walks >= 0
    rows, cols = np.nonzero(valid)
    lengths = valid.sum(axis=1)
    reach = window if reach is None else reach[rows, cols]
    spans = np.maximum(np.minimum(reach, cols), np.minimum(reach, lengths[rows] - 1 - cols)).astype(np.int8)
    order = np.argsort(spans, kind="stable")  # a radix sort on int8; walk order within a span
    bounds = np.searchsorted(spans[order], np.arange(1, window + 2))
    padded = np.full((n, length + 2 * window), -1, dtype=np.int32)
    padded[:, window:window + length] = walks
    # Each centre's window is a slice of its padded walk: gathered as rows of a view.
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * window + 1, axis=1)
    groups = []
    for span in range(1, window + 1):
        members = order[bounds[span - 1]:bounds[span]]
        if members.size:
            near = windows[rows[members], cols[members], window - span:window + span + 1]
            contexts = np.concatenate([near[:, :span], near[:, span + 1:]], axis=1)
            groups.append((span, walks[rows[members], cols[members]].astype(np.int64), contexts))
    return groups


# --------------------------------------------------------------------------------------
# The training loop shared by both models
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Vocabulary:
    """The walks as trained (items below ``min_count`` removed) and the item statistics sampling needs."""

    walks: np.ndarray    # -1-padded
    counts: np.ndarray   # occurrences per item on the walks, 0 below min_count
    cdf: np.ndarray      # cumulative negative-sampling distribution, count^ns_exponent
    keep: np.ndarray     # word2vec's down-sampling keep probability per item

    @property
    def trained(self) -> np.ndarray:
        return self.counts > 0

    @classmethod
    def of(cls, walks: np.ndarray, n_items: int, min_count: int, ns_exponent: float, sample: float
           ) -> "Vocabulary":
        walks = np.asarray(walks)
        if walks.ndim != 2:
            raise RecallError("walks must be a 2-d array (walks x length)")
        counts = np.bincount(walks[walks >= 0].ravel(), minlength=n_items)
        if ((walks[:, 1:] >= 0) & (walks[:, :-1] < 0)).any():
            walks = compact(walks, walks >= 0)  # -1 inside a walk: padding, as at its tail (span_groups)
        if min_count > 1:
            walks = compact(walks, counts[np.maximum(walks, 0)] >= min_count)
            counts = np.where(counts >= min_count, counts, 0)
        weights = np.where(counts > 0, counts.astype(np.float64) ** ns_exponent, 0.0)
        cdf = np.cumsum(weights) / max(weights.sum(), 1e-300)
        if weights.any():
            cdf[np.flatnonzero(weights)[-1]:] = 1.0  # rounding must not leave room for a draw past the last item
        return cls(walks=walks, counts=counts, cdf=cdf, keep=keep_probability(counts.astype(np.float64), sample))


# The loss only reports progress (gensim computes none unless asked), and on a big batch its
# softplus over the centres x negatives block is a tenth of the step: it is summed on every batch
# of the last epoch (the final loss is exact) and on one batch in LOSS_EVERY of the others, plus
# each epoch's last batch.
LOSS_EVERY = 8


@dataclass(frozen=True)
class Batch:
    """One optimiser step's centres, their contexts (``n_items`` where none), pair counts and shared negatives."""

    epoch: int
    progress: float          # share of all epochs' walks before this batch: the learning-rate schedule
    centres: object          # torch int64 (b,)
    contexts: object         # torch int64 (b, 2 window)
    pairs_per_centre: object  # torch float32 (b,)
    negatives: object        # torch int64 (S,)
    with_loss: bool = True   # the step sums the batch's loss (else it may return 0.0; see LOSS_EVERY)


def run_batches(vocabulary: Vocabulary, p, seed: int, step: Callable[[Batch, float], tuple[float, int]],
                pairs_per_batch: int | None = None, centre_batches: bool = False) -> tuple[list[float], int]:
    """Train ``step`` on every batch of ``p.epochs`` shuffled passes over the walks; (mean loss per epoch, pairs).

    ``p`` carries the skip-gram settings (``window, sample, epochs, learning_rate,
    min_learning_rate, workers``) and :class:`BatchParams`. Each epoch shuffles the
    walks and takes ``walk_block`` of them at a time: frequent items down-sampled,
    centres with their contexts generated at once, shuffled, and cut into batches
    of about ``pairs_per_batch`` pairs (default ``batch_size``). ``step(batch,
    decay)`` applies one update with the learning rate scaled by ``decay``, which
    falls linearly from 1 to
    ``min_learning_rate / learning_rate`` over the walks of all epochs, as in
    word2vec; it returns the batch's summed loss (0.0 allowed when ``batch.with_loss``
    is false) and its number of pairs. The mean loss of an epoch is over the batches
    whose loss was summed (every batch of the last epoch; see ``LOSS_EVERY``).

    Batches hold the centres of one context span (:func:`span_groups`). By default a
    batch of span ``s`` holds about ``pairs_per_batch`` pairs, so short spans make
    batches of many centres; ``centre_batches`` gives every batch the block's
    mean number of centres instead (``pairs_per_batch`` pairs at the block's mean
    pairs per centre), as many as without the spans. Plain SGD needs that: a
    row's update is the sum of its repeats in the batch, and twice the centres
    doubled a frequent centre's step (Recall@200 of DeepWalk on ml-100k's
    validation windows 0.1652 against 0.1691, two seeds; 0.1676 with centre
    batches); Adam scales each row's step and EGES keeps the pair-sized batches
    (BENCHMARKS.md).
    """
    import torch

    walks, n_items, cdf, keep = vocabulary.walks, vocabulary.counts.size, vocabulary.cdf, vocabulary.keep
    n_walks = walks.shape[0]
    pairs_per_batch = pairs_per_batch or p.batch_size
    threads = torch.get_num_threads()  # restored at the end: a trainer's setting leaks to later threads
    # One queue item is a block's batches: a hand-over per batch (a thread wake-up) cost a third of a step.
    blocks: queue.Queue = queue.Queue(maxsize=1 + p.workers)
    stop = threading.Event()

    def produce() -> None:
        """Each block's batches (a list) in training order, then an end mark."""
        rng = np.random.default_rng(seed)
        try:
            for epoch in range(p.epochs):
                order = rng.permutation(n_walks)
                counted = 0  # batches of this epoch so far
                for lo in range(0, n_walks, p.walk_block):
                    if stop.is_set():
                        return
                    block = walks[order[lo:lo + p.walk_block]]
                    if p.sample > 0:
                        block = compact(block, rng.random(block.shape) < keep[np.maximum(block, 0)])
                    reach = rng.integers(1, p.window + 1, size=block.shape) if p.shrink_window else None
                    # Batches of one span each, shuffled within the span; then the block's batches in a
                    # random order. Which centres share a batch (and its negatives) changes, not the
                    # expected gradient.
                    groups, parts = [], []
                    for span, centres, contexts in span_groups(block, p.window, reach):
                        shuffle = rng.permutation(centres.size)
                        centres, contexts = centres[shuffle], contexts[shuffle]
                        missing = contexts < 0
                        pairs = (2 * span - missing.sum(axis=1, dtype=np.int32)).astype(np.float32)
                        contexts[missing] = n_items  # the "no context" row
                        groups.append((centres, contexts.astype(np.int64), pairs))
                    if centre_batches:  # the block's mean pairs per centre, as before the spans
                        mean_pairs = (sum(float(pairs.sum()) for _, _, pairs in groups)
                                      / max(1, sum(centres.size for centres, _, _ in groups)))
                        block_size = max(1, pairs_per_batch // max(1, int(mean_pairs)))
                    for centres, contexts, pairs in groups:
                        size = block_size if centre_batches else max(
                            1, pairs_per_batch // max(1, round(float(pairs.mean()))))
                        parts += [(centres[first:first + size], contexts[first:first + size],
                                   pairs[first:first + size]) for first in range(0, centres.size, size)]
                    if not parts:
                        continue
                    n_batches = len(parts)
                    negatives = draw_negatives(cdf, (n_batches, p.shared_negatives), rng)
                    last_block = lo + p.walk_block >= n_walks
                    out = []
                    for b, k in enumerate(rng.permutation(n_batches)):
                        centres, contexts, pairs = parts[k]
                        progress = (epoch * n_walks + lo + block.shape[0] * b / n_batches) / (p.epochs * n_walks)
                        counted += 1
                        with_loss = (epoch == p.epochs - 1 or counted % LOSS_EVERY == 0
                                     or (last_block and b == n_batches - 1))
                        out.append(Batch(epoch, progress, torch.from_numpy(centres), torch.from_numpy(contexts),
                                         torch.from_numpy(pairs), torch.from_numpy(negatives[b]), with_loss))
                    blocks.put(out)
        finally:
            blocks.put(None)

    epoch_loss = [0.0] * p.epochs
    epoch_pairs = [0] * p.epochs
    loss_pairs = [0] * p.epochs  # pairs of the batches whose loss was summed
    tally = threading.Lock()
    errors: list[BaseException] = []

    taking = threading.Lock()
    current = iter(())  # the batches of the block being trained, shared by the trainers

    def next_batch() -> Batch | None:
        """The next batch in training order; None after the producer's end mark (Hogwild trainers share
        each block's batches, so they train neighbouring batches of the schedule, as one trainer would)."""
        nonlocal current
        with taking:
            while (batch := next(current, None)) is None:
                block = blocks.get()
                if block is None:
                    blocks.put(None)  # the end mark stays for the other trainers
                    return None
                current = iter(block)
            return batch

    def consume() -> None:
        """Train on batches until the producer's end mark."""
        torch.set_num_threads(1)  # per thread: OpenMP keeps the thread count per calling thread
        try:
            with torch.no_grad():
                while (batch := next_batch()) is not None:
                    if stop.is_set():
                        continue  # drain: another trainer failed
                    decay = 1.0 + (p.min_learning_rate / p.learning_rate - 1.0) * batch.progress
                    loss, pairs = step(batch, decay)
                    with tally:
                        epoch_pairs[batch.epoch] += pairs
                        if batch.with_loss:
                            epoch_loss[batch.epoch] += loss
                            loss_pairs[batch.epoch] += pairs
        except BaseException as error:  # noqa: BLE001  (re-raised once every thread has stopped)
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
                blocks.get(timeout=0.1)
            except queue.Empty:
                pass
        torch.set_num_threads(threads)
    if errors:
        raise errors[0]
    return [loss / pairs for loss, pairs in zip(epoch_loss, loss_pairs) if pairs], sum(epoch_pairs)


# --------------------------------------------------------------------------------------
# Plain skip-gram: an input and a context table over item IDs (DeepWalk, Node2Vec)
# --------------------------------------------------------------------------------------


@dataclass
class SkipgramResult:
    """Input vectors (float32, not normalised), the items that had walks, and what the training saw."""

    vectors: np.ndarray
    trained: np.ndarray
    losses: list[float]   # mean loss per pair, per epoch
    pairs: int
    seconds: float


def train_vectors(walks: np.ndarray, n_items: int, p, seed: int) -> SkipgramResult:
    """Skip-gram with negative sampling over -1-padded walks of item indices, word2vec's model.

    ``p`` carries ``dim, window, negative, ns_exponent, sample, epochs, min_count,
    learning_rate, min_learning_rate, workers`` and :class:`BatchParams`. Inputs
    start as word2vec's (uniform in +-0.5 / dim), contexts at zero; both tables
    take word2vec's SGD step at ``learning_rate``, decayed linearly. Items below
    ``min_count`` get no vector.
    """
    import torch

    started = time.perf_counter()
    vocabulary = Vocabulary.of(walks, n_items, p.min_count, p.ns_exponent, p.sample)
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.empty(n_items, p.dim).uniform_(-0.5 / p.dim, 0.5 / p.dim, generator=generator)
    context = torch.zeros(n_items + 1, p.dim)  # row n_items stands for "no context" and stays zero
    losses, pairs, trained = [], 0, vocabulary.trained
    if trained.any():
        losses, pairs = run_batches(vocabulary, p, seed, lambda batch, decay: sgd_step(
            inputs, context, batch, p.negative, p.learning_rate * decay), batch_pairs(vocabulary, p),
            centre_batches=True)
    vectors = np.where(trained[:, None], inputs.numpy(), np.float32(0))
    return SkipgramResult(vectors, trained, losses, pairs, time.perf_counter() - started)


def batch_pairs(vocabulary: Vocabulary, p) -> int:
    """``batch_size``, lowered so the most frequent item (after down-sampling) is expected as a context at most
    ``max_batch_repeats`` times per batch.

    A batch sums each row's updates, all taken at the same point, where word2vec
    applies them one after the other, each seeing the last, so they saturate.
    On a large vocabulary a row recurs a few times per batch and the sum is
    word2vec's step; on a small one it recurs hundreds of times, and once its
    contexts agree the sum overshoots and diverges: a planted log of two 20-item
    clusters diverged at 32 expected repeats (1,265 pairs per batch) and learnt
    at 16 (632 pairs). In a 4,096-pair batch the most frequent item is about 2
    contexts on taobao-84k and 15 on ml-100k (batches unchanged), 21-25 on the
    bundled sample (batches of 2,600-3,100 pairs).
    """
    kept = vocabulary.counts * vocabulary.keep
    if kept.sum() <= 0:
        return p.batch_size
    return int(max(1, min(p.batch_size, p.max_batch_repeats * kept.sum() / kept.max())))


def sgd_step(inputs, context, batch: Batch, negative: int, rate: float) -> tuple[float, int]:
    """One SGD step of both tables on the summed loss of the batch's pairs; returns (summed loss, pairs).

    Every gradient comes from the tables before the step, as in one word2vec pair.
    """
    centres, negatives = batch.centres, batch.negatives
    x = inputs.index_select(0, centres)                      # b x D
    # The step -rate is folded into the score gradients: index_add_ with alpha= is 3x slower than without.
    loss, flat, d_x, d_z, d_zn = sgns_gradients(x, context, batch.contexts, negatives, batch.pairs_per_centre,
                                                negative, scale=-rate, with_loss=batch.with_loss)
    inputs.index_add_(0, centres, d_x)
    context.index_add_(0, flat, d_z)
    context.index_add_(0, negatives, d_zn)
    context[-1] = 0.0  # the "no context" row (its gradients are masked to zero; kept exact)
    return loss, int(batch.pairs_per_centre.sum())


def sgns_gradients(x, context, contexts, negatives, pairs_per_centre, negative: int, scale: float = 1.0,
                   with_loss: bool = True):
    """The shared-negative skip-gram loss of a batch and its gradients, for centre vectors ``x`` (b x D).

    For centre v with contexts u (``contexts``, b x 2W, the last context row where
    none) and the S shared ``negatives`` n, each weighted ``pairs(v) negative / S``:
    ``loss = -sum_u log sigma(x_v . z_u) - sum_n w log sigma(-x_v . z_n)``.
    Returns ``(loss, flat contexts, d_x (b x D), d_z (b 2W x D), d_zn (S x D))``,
    the gradients multiplied by ``scale`` (a step folded in, or 1); the loss is 0.0
    unless ``with_loss``.
    """
    import torch

    b, dim = x.shape
    flat = contexts.reshape(-1)
    z = context.index_select(0, flat).view(b, -1, dim)       # b x 2W x D
    mask = (contexts != context.shape[0] - 1).to(x.dtype)
    pos_scores = (z * x.unsqueeze(1)).sum(2)
    pos = torch.sigmoid(pos_scores)                          # b x 2W
    zn = context.index_select(0, negatives)                  # S x D
    neg_scores = x @ zn.T
    neg = torch.sigmoid(neg_scores)                          # b x S
    weight = (pairs_per_centre * (negative / negatives.shape[0])).unsqueeze(1)  # each of the S weighs K n / S
    # -log sigma(s) = softplus(-s): exact where sigma saturates, and half the time of log(clamp(sigma)).
    loss = 0.0
    if with_loss:
        loss = float(torch.nn.functional.softplus(-pos_scores).mul_(mask).sum()
                     + torch.nn.functional.softplus(neg_scores).sum(1).dot(weight.squeeze(1)))
    g_pos = (pos - 1.0).mul_(mask)                           # dLoss/dscore: b x 2W
    g_neg = neg.mul_(weight)                                 # b x S
    if scale != 1.0:
        g_pos.mul_(scale)
        g_neg.mul_(scale)
    d_x = (g_pos.unsqueeze(2) * z).sum(1).addmm_(g_neg, zn)
    d_z = g_pos.unsqueeze(2) * x.unsqueeze(1)                # b x 2W x D
    d_zn = g_neg.T @ x
    return loss, flat, d_x, d_z.view(-1, dim), d_zn


__all__ = ["Batch", "BatchParams", "SkipgramResult", "Vocabulary", "batch_pairs", "compact", "draw_negatives",
           "keep_probability", "run_batches", "sgd_step", "sgns_gradients", "span_groups", "train_vectors"]
