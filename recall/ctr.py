"""Smoothed click-through rates: a Beta prior fitted to all items, then the posterior mean.

Each item j has ``c_j`` clicks out of ``n_j`` impressions. Its CTR is drawn from a
common prior ``p_j ~ Beta(a, b)`` and ``c_j ~ Binomial(n_j, p_j)``; the smoothed CTR is
the posterior mean

    ctr_j = (c_j + a) / (n_j + a + b),

so an item with few impressions stays near the prior mean ``mu = a / (a + b)`` and an
item with many impressions keeps its own rate. ``a + b`` (the *strength*) is the prior's
weight in pseudo-impressions.

**Method of moments (default).** With ``r_j = c_j / n_j``, ``N = sum_j n_j`` and the
impression-weighted mean ``mu = sum_j c_j / N``, the impression-weighted spread

    S = sum_j n_j (r_j - mu)^2

has, under the Beta-Binomial, expectation ``mu (1 - mu) sum_j (1 - n_j / N)(1 + (n_j - 1) rho)``
with ``rho = 1 / (a + b + 1)`` (Kleinman 1973, "Proportions with extraneous variance").
Solving for ``rho``:

    rho = (S / (mu (1 - mu)) - sum_j (1 - n_j / N)) / sum_j (1 - n_j / N)(n_j - 1)
    a + b = 1 / rho - 1,   a = mu (a + b),   b = (1 - mu)(a + b).

Weighting by ``n_j`` matters: the raw CTR of an item shown 3 times is mostly binomial
noise, and the unweighted variance of raw CTRs would read that noise as real spread
between items (a prior far too weak). The formula subtracts the binomial part exactly.

**Maximum likelihood (option).** Minka's fixed point for the Beta-Binomial (Polya)
likelihood ("Estimating a Dirichlet distribution", 2000, eq. 55), started from the
moments estimate (when that is regular, not a guard below), iterated on the distinct
``(c, n)`` pairs and accelerated with SQUAREM:

    a <- a sum_j [psi(c_j + a) - psi(a)] / sum_j [psi(n_j + a + b) - psi(a + b)]
    b <- b sum_j [psi(n_j - c_j + b) - psi(b)] / sum_j [psi(n_j + a + b) - psi(a + b)]

**Guards for degenerate data.** Only items with ``n_j > 0`` inform the prior.

- Fewer than ``min_items`` such items, or no way to tell binomial noise from spread
  (every ``n_j = 1``, or one item holds all impressions): a *weak* prior of strength
  ``weak_strength`` centred on the pooled mean.
- No spread beyond binomial noise (``rho <= 0``, e.g. identical raw CTRs, or no click /
  only clicks anywhere): the data cannot bound the strength, which is capped at
  ``max_strength`` (default: ``N``, so the prior never outweighs all the data together).
- A pooled mean of exactly 0 or 1 is moved to ``(C + 0.5) / (N + 1)`` so that a, b > 0.

A hierarchical level below (a pair within an item, a crowd within its parent crowd) is
smoothed towards its parent's smoothed rate ``m`` with a fixed strength ``k``, i.e. a
``Beta(k m, k (1 - m))`` prior: ``(c + k m) / (n + k)`` (:func:`shrink`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.special import digamma

PriorMethod = Literal["moments", "ml"]

# Floor on the prior strength: rho close to 1 (items all at CTR 0 or 1) would give
# a + b <= 0, which is not a Beta distribution.
MIN_STRENGTH = 1e-3


@dataclass(frozen=True)
class BetaPrior:
    """A Beta(a, b) prior on CTRs; ``method`` says how it was obtained."""

    a: float
    b: float
    method: str = "moments"

    @property
    def mean(self) -> float:
        return self.a / (self.a + self.b)

    @property
    def strength(self) -> float:
        """``a + b``: the prior's weight in pseudo-impressions."""
        return self.a + self.b

    def smooth(self, clicks, impressions) -> np.ndarray:
        """Posterior mean ``(c + a) / (n + a + b)``, element-wise."""
        clicks, impressions = _check_counts(clicks, impressions)
        return posterior_mean(clicks, impressions, self.a, self.b)

    @classmethod
    def from_mean(cls, mean: float, strength: float, method: str) -> "BetaPrior":
        return cls(a=float(mean * strength), b=float((1.0 - mean) * strength), method=method)


def posterior_mean(clicks, impressions, a: float, b: float):
    """``(c + a) / (n + a + b)``: the smoothed rate under a ``Beta(a, b)`` prior.

    Python operators only, so the same function builds numpy arrays and Spark
    columns (:mod:`recall.spark.crowd`, :mod:`recall.spark.ranki2i`); no checks here
    (:meth:`BetaPrior.smooth` checks the counts first).
    """
    return (clicks + a) / (impressions + a + b)


def shrunk(clicks, impressions, parent_rate, strength):
    """``(c + k m) / (n + k)``: the rate shrunk towards a parent rate ``m`` with strength ``k``.

    Python operators only (numpy arrays or Spark columns), like :func:`posterior_mean`.
    """
    return (clicks + strength * parent_rate) / (impressions + strength)


def _check_counts(clicks, impressions) -> tuple[np.ndarray, np.ndarray]:
    clicks = np.asarray(clicks, dtype=np.float64)
    impressions = np.asarray(impressions, dtype=np.float64)
    if clicks.shape != impressions.shape:
        raise ValueError(f"clicks {clicks.shape} and impressions {impressions.shape} differ in shape")
    if (clicks < 0).any() or (clicks > impressions).any():
        raise ValueError("counts must satisfy 0 <= clicks <= impressions (clip clicks to impressions first)")
    return clicks, impressions


def fit_beta_prior(clicks, impressions, *, method: PriorMethod = "moments", min_items: int = 10,
                   weak_strength: float = 2.0, max_strength: float | None = None,
                   max_iter: int = 2000, tol: float = 1e-9) -> BetaPrior:
    """Fit ``Beta(a, b)`` to per-item click and impression counts (see the module docstring).

    Parameters
    ----------
    clicks, impressions
        Arrays of equal shape with ``0 <= clicks <= impressions``; entries with no
        impressions are ignored.
    method
        ``"moments"`` (impression-weighted method of moments) or ``"ml"`` (Minka's
        fixed point on the Beta-Binomial likelihood, started from the moments fit).
    min_items
        Fewer items with impressions than this give the weak prior.
    weak_strength
        ``a + b`` of the weak prior.
    max_strength
        Cap on ``a + b``; ``None`` means the total number of impressions.
    max_iter, tol
        Stopping rule of the ML iteration (relative change of ``a`` and ``b``).

    Returns
    -------
    BetaPrior
        ``method`` is ``"moments"``, ``"ml"``, ``"weak"`` or ``"capped"`` (no spread
        beyond binomial noise: strength at its cap).
    """
    if method not in ("moments", "ml"):
        raise ValueError(f"method must be 'moments' or 'ml', not {method!r}")
    clicks, impressions = _check_counts(clicks, impressions)
    shown = impressions > 0
    c, n = clicks[shown].ravel(), impressions[shown].ravel()
    total_n, total_c = float(n.sum()), float(c.sum())
    if total_n == 0:
        return BetaPrior.from_mean(0.5, weak_strength, "weak")
    cap = total_n if max_strength is None else float(max_strength)
    mu = total_c / total_n
    degenerate = total_c == 0 or total_c == total_n
    if degenerate:
        mu = (total_c + 0.5) / (total_n + 1.0)
    if c.size < min_items:
        return BetaPrior.from_mean(mu, weak_strength, "weak")
    if degenerate:
        # All zero (or all one): no spread at all, the rate is the same everywhere.
        return BetaPrior.from_mean(mu, max(cap, MIN_STRENGTH), "capped")

    share = n / total_n
    spread = float(np.sum(n * (c / n - mu) ** 2))
    noise_terms = float(np.sum(1.0 - share))
    rho_weight = float(np.sum((1.0 - share) * (n - 1.0)))
    if rho_weight <= 0:
        # Every item seen once, or a single item holds all impressions: the spread
        # cannot be split into binomial noise and between-item variance.
        return BetaPrior.from_mean(mu, weak_strength, "weak")
    rho = (spread / (mu * (1.0 - mu)) - noise_terms) / rho_weight
    if rho <= 0 or 1.0 / rho - 1.0 >= cap:
        return BetaPrior.from_mean(mu, max(cap, MIN_STRENGTH), "capped")
    strength = max(1.0 / rho - 1.0, MIN_STRENGTH)
    prior = BetaPrior.from_mean(mu, strength, "moments")
    if method == "ml":
        prior = _minka_fixed_point(c, n, prior, cap, max_iter, tol)
    return prior


def _minka_fixed_point(c: np.ndarray, n: np.ndarray, start: BetaPrior, cap: float,
                       max_iter: int, tol: float) -> BetaPrior:
    """Maximise the Beta-Binomial likelihood by Minka's fixed point, from ``start``.

    The plain iteration converges linearly and slowly when the prior is strong
    (thousands of steps); SQUAREM (Varadhan and Roland 2008, scheme S3) extrapolates
    along two consecutive steps and falls back to the plain step when the jump
    leaves the domain, so it has the same fixed point in far fewer evaluations.
    """
    # Items with the same (c, n) contribute identical terms: iterate on the distinct pairs.
    pairs, weight = np.unique(np.stack([c, n]), axis=1, return_counts=True)
    c, n = pairs[0], pairs[1]
    weight = weight.astype(np.float64)

    def step(x: np.ndarray) -> np.ndarray:
        a, b = x
        denom = np.sum(weight * (digamma(n + a + b) - digamma(a + b)))
        return np.array([a * np.sum(weight * (digamma(c + a) - digamma(a))) / denom,
                         b * np.sum(weight * (digamma(n - c + b) - digamma(b))) / denom])

    x = np.array([start.a, start.b])
    for _ in range(max_iter):
        x1 = step(x)
        if np.all(np.abs(x1 - x) <= tol * x):
            x = x1
            break
        x2 = step(x1)
        r, v = x1 - x, x2 - 2 * x1 + x
        alpha = -np.linalg.norm(r) / max(np.linalg.norm(v), 1e-300)
        jump = x - 2 * min(alpha, -1.0) * r + min(alpha, -1.0) ** 2 * v
        x = step(jump) if np.all(jump > 0) else step(x2)
        if x.sum() >= cap:
            # The likelihood keeps rising towards "no spread": stop at the cap, keeping the mean.
            return BetaPrior.from_mean(x[0] / x.sum(), cap, "capped")
    return BetaPrior(a=float(x[0]), b=float(x[1]), method="ml")


def smoothed_ctr(clicks, impressions, prior: BetaPrior | None = None, **fit_options) -> np.ndarray:
    """``(c + a) / (n + a + b)`` with ``prior`` or, if none is given, one fitted to these counts."""
    if prior is None:
        prior = fit_beta_prior(clicks, impressions, **fit_options)
    return prior.smooth(clicks, impressions)


def shrink(clicks, impressions, prior_mean, strength: float) -> np.ndarray:
    """Hierarchical smoothing towards a per-entry parent rate: ``(c + k m) / (n + k)``."""
    clicks, impressions = _check_counts(clicks, impressions)
    return shrunk(clicks, impressions, np.asarray(prior_mean, dtype=np.float64), strength)


__all__ = ["BetaPrior", "PriorMethod", "fit_beta_prior", "posterior_mean", "shrink", "shrunk", "smoothed_ctr"]
