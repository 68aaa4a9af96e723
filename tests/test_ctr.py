"""Smoothed CTR: the Beta prior fit against hand-computed values, a pure-Python oracle and simulation."""

from __future__ import annotations

import numpy as np
import pytest

from recall.ctr import BetaPrior, fit_beta_prior, shrink, smoothed_ctr


def brute_force_moments(clicks, impressions, cap=None):
    """The module docstring's moments formula with plain loops: (a, b) or None when a guard applies."""
    items = [(c, n) for c, n in zip(clicks, impressions) if n > 0]
    total_n = sum(n for _, n in items)
    mu = sum(c for c, _ in items) / total_n
    spread = sum(n * (c / n - mu) ** 2 for c, n in items)
    noise = sum(1 - n / total_n for _, n in items)
    weight = sum((1 - n / total_n) * (n - 1) for _, n in items)
    rho = (spread / (mu * (1 - mu)) - noise) / weight
    strength = 1 / rho - 1
    if rho <= 0 or strength >= (cap or total_n):
        return None
    return mu * strength, (1 - mu) * strength


def test_hand_computed_prior_and_smoothing():
    # mu = 4/20 = 0.2; S = 10*0.2^2 + 10*0.2^2 = 0.8; S/(mu(1-mu)) = 5; sum(1 - n/N) = 1;
    # sum (1 - n/N)(n - 1) = 9; rho = 4/9; a + b = 9/4 - 1 = 1.25; a = 0.25, b = 1.0.
    prior = fit_beta_prior([0, 4], [10, 10], min_items=2)
    assert prior.method == "moments"
    assert prior.a == pytest.approx(0.25) and prior.b == pytest.approx(1.0)
    np.testing.assert_allclose(prior.smooth([0, 4], [10, 10]), [1 / 45, 17 / 45])
    np.testing.assert_allclose(smoothed_ctr([0, 4, 0], [10, 10, 0], min_items=2), [1 / 45, 17 / 45, 0.2])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_moments_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = rng.integers(0, 60, 40)
    c = rng.binomial(n, rng.beta(1.5, 6.0, 40))
    prior = fit_beta_prior(c, n)
    expected = brute_force_moments(c.tolist(), n.tolist())
    assert expected is not None
    assert prior.method == "moments"
    assert (prior.a, prior.b) == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(prior.smooth(c, n), [(ci + expected[0]) / (ni + sum(expected))
                                                    for ci, ni in zip(c, n)], rtol=1e-12)


def test_too_few_items_give_the_weak_prior():
    prior = fit_beta_prior([3], [10], min_items=10, weak_strength=2.0)
    assert prior.method == "weak"
    assert (prior.a, prior.b) == pytest.approx((0.6, 1.4))


def test_zero_variance_caps_the_strength_at_the_total_impressions():
    prior = fit_beta_prior([2] * 20, [10] * 20)
    assert prior.method == "capped"
    assert (prior.a, prior.b) == pytest.approx((40.0, 160.0))
    assert fit_beta_prior([2] * 20, [10] * 20, max_strength=50).strength == pytest.approx(50)
    assert fit_beta_prior([2] * 20, [10] * 20, method="ml").method == "capped"


def test_no_clicks_at_all_still_gives_a_proper_prior():
    prior = fit_beta_prior([0] * 20, [10] * 20)
    assert prior.a > 0 and prior.b > 0
    assert prior.mean == pytest.approx(0.5 / 201)
    assert np.all(np.isfinite(prior.smooth([0, 0], [0, 10])))


def test_every_item_seen_once_gives_the_weak_prior():
    prior = fit_beta_prior([0, 1] * 10, [1] * 20)
    assert prior.method == "weak" and prior.mean == pytest.approx(0.5)


def test_items_without_impressions_are_ignored_by_the_fit():
    base = fit_beta_prior([0, 4], [10, 10], min_items=2)
    padded = fit_beta_prior([0, 4, 0, 0], [10, 10, 0, 0], min_items=2)
    assert (padded.a, padded.b) == pytest.approx((base.a, base.b))


def test_invalid_counts_are_refused():
    with pytest.raises(ValueError, match="clicks <= impressions"):
        fit_beta_prior([5], [3])
    with pytest.raises(ValueError, match="shape"):
        fit_beta_prior([1, 2], [3])
    with pytest.raises(ValueError, match="method"):
        fit_beta_prior([1], [3], method="bayes")


@pytest.mark.parametrize("a, b", [(2.0, 38.0), (0.5, 3.0), (8.0, 12.0)])
@pytest.mark.parametrize("method", ["moments", "ml"])
def test_fit_recovers_a_simulated_beta_binomial_prior(a, b, method):
    rng = np.random.default_rng(int(a * 100 + b))
    n = rng.integers(5, 400, 4000)
    c = rng.binomial(n, rng.beta(a, b, n.size))
    prior = fit_beta_prior(c, n, method=method)
    assert prior.method == method
    assert prior.mean == pytest.approx(a / (a + b), rel=0.05)
    assert prior.strength == pytest.approx(a + b, rel=0.2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ml_and_moments_roughly_agree(seed):
    rng = np.random.default_rng(seed)
    n = rng.integers(1, 200, 2000)
    c = rng.binomial(n, rng.beta(1.0, 9.0, n.size))
    moments = fit_beta_prior(c, n)
    ml = fit_beta_prior(c, n, method="ml")
    assert ml.mean == pytest.approx(moments.mean, rel=0.03)
    assert ml.strength == pytest.approx(moments.strength, rel=0.2)


def test_ml_is_a_stationary_point_of_the_likelihood():
    from scipy.special import betaln

    rng = np.random.default_rng(5)
    n = rng.integers(1, 100, 500)
    c = rng.binomial(n, rng.beta(2.0, 5.0, n.size))
    ml = fit_beta_prior(c, n, method="ml")

    def loglik(a, b):
        return np.sum(betaln(c + a, n - c + b) - betaln(a, b))

    best = loglik(ml.a, ml.b)
    for da, db in [(1.01, 1), (0.99, 1), (1, 1.01), (1, 0.99)]:
        assert loglik(ml.a * da, ml.b * db) <= best + 1e-9


def test_smoothing_pulls_small_counts_towards_the_prior():
    prior = BetaPrior(a=1.0, b=19.0)
    low, high = prior.smooth([1, 100], [1, 100])
    assert low == pytest.approx(2 / 21) and high == pytest.approx(101 / 120)


def test_shrink_towards_a_per_entry_parent_rate():
    np.testing.assert_allclose(shrink([1, 0, 5], [4, 0, 10], [0.1, 0.3, 0.5], 10.0),
                               [2 / 14, 0.3, 10 / 20])
