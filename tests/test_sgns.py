"""The batched skip-gram trainer (recall.sgns): one step against autograd, the SGNS optimum, batch sizing."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest

from recall import sgns
from recall.channels.deepwalk import DeepWalkParams
from recall.sgns import Batch, Vocabulary, batch_pairs, sgd_step, train_vectors
from tests.test_eges import optimal_sgns_loss, planted_walks

torch = pytest.importorskip("torch")

PLANTED = dict(dim=16, epochs=3, batch_size=256, sample=0, shrink_window=False)


def test_sgd_step_is_word2vecs_step_on_the_shared_negative_loss():
    """Both tables move by -rate x the autograd gradient of the batch's summed loss, repeats summed."""
    gen = torch.Generator().manual_seed(3)
    inputs = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    context = torch.randn(7, 4, generator=gen, dtype=torch.float64)
    context[-1] = 0
    centres = torch.tensor([0, 3, 5, 3, 1])
    contexts = torch.tensor([[1, 2, 6], [2, 6, 6], [4, 0, 1], [5, 5, 6], [0, 6, 6]])  # 6: no context
    n_pairs = (contexts != 6).sum(1).double()
    negatives = torch.tensor([2, 4, 1, 0, 5, 5])  # shared by every centre (a repeat included)
    leaves = [inputs.clone().requires_grad_(), context.clone().requires_grad_()]
    x = leaves[0][centres]
    pos = (leaves[1][contexts] * x.unsqueeze(1)).sum(2)
    neg = x @ leaves[1][negatives].T
    weight = (n_pairs * 3 / 6).unsqueeze(1)
    total = (-(torch.nn.functional.logsigmoid(pos) * (contexts != 6)).sum()
             - (torch.nn.functional.logsigmoid(-neg) * weight).sum())
    total.backward()

    loss, pairs = sgd_step(inputs, context, Batch(0, 0.0, centres, contexts, n_pairs, negatives), 3, 0.1)
    assert pairs == 9 and loss == pytest.approx(total.item(), rel=1e-9)
    torch.testing.assert_close(inputs, leaves[0].detach() - 0.1 * leaves[0].grad)
    expected_context = leaves[1].detach() - 0.1 * leaves[1].grad
    expected_context[-1] = 0  # the "no context" row never moves
    torch.testing.assert_close(context, expected_context)


def test_loss_reaches_the_sgns_optimum_on_a_planted_graph():
    """Walks inside one of two 20-item clusters reach the analytic optimum; uniform walks cannot."""
    p = DeepWalkParams(**PLANTED)
    result = train_vectors(planted_walks(), 40, p, seed=0)
    assert len(result.losses) == 3 and result.losses[0] > result.losses[-1] and result.trained.all()
    uniform = np.full(40, 1 / 40)
    clustered = optimal_sgns_loss(np.r_[np.full(20, 1 / 20), np.zeros(20)], uniform, 5)  # 2.094
    assert result.losses[-1] == pytest.approx(clustered, abs=0.06)
    noise = np.random.default_rng(1).integers(0, 40, (400, 10)).astype(np.int32)
    flat = train_vectors(noise, 40, p, seed=0).losses[-1]
    assert flat == pytest.approx(optimal_sgns_loss(uniform, uniform, 5), abs=0.06)  # 2.703
    unit = result.vectors / np.linalg.norm(result.vectors, axis=1, keepdims=True)
    cosine = unit @ unit.T
    same = np.equal.outer(np.arange(40) < 20, np.arange(40) < 20)
    assert cosine[same].mean() > cosine[~same].mean() + 0.5


def test_small_vocabularies_get_smaller_batches():
    """The batch holds the most frequent item about max_batch_repeats times; without the bound it diverges."""
    walks = planted_walks(per_cluster=20)
    walks = np.tile(walks, (10, 1))  # 40 items, 4,000 walks: 3 epochs of ~40 steps at 4,096 pairs
    p = DeepWalkParams(dim=16, epochs=3, sample=0)
    vocabulary = Vocabulary.of(walks, 40, 1, 0.75, 0.0)
    counts = np.bincount(walks.ravel(), minlength=40)
    assert batch_pairs(vocabulary, p) == int(16 * counts.sum() / counts.max())
    assert batch_pairs(vocabulary, p.model_copy(update={"max_batch_repeats": 1e9})) == 4096
    bounded = train_vectors(walks, 40, p, seed=0).losses[-1]
    assert bounded == pytest.approx(optimal_sgns_loss(np.r_[np.full(20, 1 / 20), np.zeros(20)],
                                                      np.full(40, 1 / 40), 5), abs=0.1)
    unbounded = train_vectors(walks, 40, p.model_copy(update={"max_batch_repeats": 1e9}), seed=0).losses[-1]
    assert not unbounded < bounded + 1.0  # NaN or far above: the summed updates overshoot


def test_reproducible_under_a_seed_and_hogwild_reaches_the_same_loss():
    p = DeepWalkParams(**PLANTED)
    one = train_vectors(planted_walks(), 40, p, seed=5)
    again = train_vectors(planted_walks(), 40, p, seed=5)
    np.testing.assert_array_equal(one.vectors, again.vectors)
    assert one.losses == again.losses
    two = train_vectors(planted_walks(), 40, p.model_copy(update={"workers": 2}), seed=5)
    assert two.pairs == one.pairs
    assert two.losses[-1] == pytest.approx(one.losses[-1], abs=0.03)


def test_the_loss_summed_on_fewer_batches_leaves_the_training_alone():
    """The loss is summed on one batch in LOSS_EVERY before the last epoch: the same vectors, the same
    final loss, and earlier losses close to those summed on every batch."""
    p = DeepWalkParams(**{**PLANTED, "batch_size": 64})
    sampled = train_vectors(planted_walks(), 40, p, seed=5)
    with mock.patch.object(sgns, "LOSS_EVERY", 1):
        every = train_vectors(planted_walks(), 40, p, seed=5)
    np.testing.assert_array_equal(sampled.vectors, every.vectors)
    assert sampled.pairs == every.pairs and len(sampled.losses) == len(every.losses) == 3
    assert sampled.losses[-1] == every.losses[-1]
    assert sampled.losses[:-1] == pytest.approx(every.losses[:-1], rel=0.05)
    assert sampled.losses[0] != every.losses[0]  # the first epoch's loss really was sampled


def test_items_below_min_count_get_no_vector():
    walks = planted_walks()
    walks[0, 0] = 40  # item 40 once
    result = train_vectors(walks, 42, DeepWalkParams(**PLANTED, min_count=2), seed=0)
    assert result.trained[:40].all() and not result.trained[40:].any()
    assert not result.vectors[40:].any()
