"""ALS: implicit-feedback matrix factorisation (Hu, Koren & Volinsky, 2008), recalled by faiss.

For a user u and an item i, over u's events e on i of the channel's ``behaviors``
inside ``window_days``:

    r_ui = AGG_e  bw(b_e)                 (AGG: sum, or max with aggregate = "max")
    c_ui = 1 + alpha * r_ui,   p_ui = 1   where r_ui > 0
    c_ui = 1,                  p_ui = 0   elsewhere

    min_{x, y}  sum_{u, i} c_ui (p_ui - x_u . y_i)^2 + regularization (sum_u |x_u|^2 + sum_i |y_i|^2)

``bw`` is ``behavior_weights`` (unset: ``triggers.behavior_weights``), so a
purchase is stronger evidence than a click, and with ``sum`` every repeated
engagement adds confidence, as the paper's counts do. implicit's
``AlternatingLeastSquares`` (conjugate-gradient solver, ``factors``,
``iterations``, ``regularization``) fits it, seeded with the run's seed; with
``threads = 1`` (the default; BLAS is held at one thread while it runs) two fits
on the same data give bit-identical factors.

**Recall.** score(u, i) = x_u . y_i: each user's ``n`` best items they have not
engaged with, by faiss inner-product search over the items' factors
(:class:`recall.embedding.VectorIndex`; exact up to ``ann_threshold`` items).
Scores <= 0 are dropped (the model predicts no preference there). A user with no
such event in the window has no factors and gets nothing from this channel; an
item nobody engaged with is not indexed. There is no i2i table: ALS scores users
directly.

implicit passes the matrix values to its solver as the confidences ``c_ui``
themselves (its own ``alpha`` is left at 1), so the stored values are exactly
``1 + alpha * r_ui``.
"""

from __future__ import annotations

import warnings
from typing import ClassVar, Literal

import numpy as np
import polars as pl
import scipy.sparse as sp
from pydantic import Field, field_validator

from recall import schema as S
from recall.context import IIDX, UIDX, TrainData
from recall.embedding import IndexParams, VectorIndex, search_queries
from recall.interface import BehaviorList, Channel, Span


class ALSParams(IndexParams):
    behaviors: BehaviorList = Field(default_factory=lambda: ["click", "fav", "cart", "buy"],
                                    description="behaviours that count as positive feedback")
    window_days: Span = Field(None, gt=0, description="only the last N days of training data (inf: all)")
    behavior_weights: dict[str, float] | None = Field(
        None, description="r_ui per event by behaviour; unset: triggers.behavior_weights")
    aggregate: Literal["sum", "max"] = Field("sum", description="combine a user's events on one item: "
                                                                "sum (repeats add confidence) or max")
    factors: int = Field(16, ge=1, description="latent factors")
    iterations: int = Field(15, ge=1, description="ALS sweeps")
    regularization: float = Field(0.05, ge=0, description="L2 penalty on the factors")
    alpha: float = Field(10.0, ge=0, description="confidence slope: c_ui = 1 + alpha * r_ui")
    threads: int = Field(1, ge=0, description="implicit's threads (0: all cores); only 1 is bit-reproducible")

    @field_validator("behavior_weights")
    @classmethod
    def _known(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return None
        unknown = sorted(set(value) - set(S.BEHAVIORS))
        if unknown:
            raise ValueError(f"unknown behaviour(s) {unknown}; allowed: {', '.join(S.BEHAVIORS)}")
        if any(w < 0 for w in value.values()):
            raise ValueError("behaviour weights must be >= 0")
        return value


def confidence(data: TrainData, p: ALSParams) -> sp.csr_matrix:
    """Users x items ``c_ui = 1 + alpha * r_ui`` where ``r_ui > 0`` (float32)."""
    weights = p.behavior_weights if p.behavior_weights is not None else data.triggers.behavior_weights
    bw = pl.DataFrame({S.BEHAVIOR: list(weights), "bw": [float(w) for w in weights.values()]}).with_columns(
        pl.col(S.BEHAVIOR).cast(data.events.schema[S.BEHAVIOR]))
    events = data.events.filter(pl.col(S.BEHAVIOR).is_in(p.behaviors))
    if p.window_days is not None:
        events = events.filter(pl.col(S.TS) >= data.now - p.window_days * 86400)
    agg = pl.col("bw").sum() if p.aggregate == "sum" else pl.col("bw").max()
    pairs = (events.join(bw, on=S.BEHAVIOR)
             .group_by(UIDX, IIDX).agg(agg.alias("r"))
             .filter(pl.col("r") > 0)
             .sort(UIDX, IIDX))
    values = (1.0 + p.alpha * pairs["r"].to_numpy()).astype(np.float32)
    return sp.csr_matrix((values, (pairs[UIDX].to_numpy(), pairs[IIDX].to_numpy())),
                         shape=(data.n_users, data.n_items), dtype=np.float32)


def fit_factors(matrix: sp.csr_matrix, p: ALSParams, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """implicit's ALS on the confidence matrix: float32 user and item factors.

    Rows of users and items without any entry are zero (the solver would leave
    them at a small random start).
    """
    if matrix.nnz == 0:
        return (np.zeros((matrix.shape[0], p.factors), np.float32),
                np.zeros((matrix.shape[1], p.factors), np.float32))
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    # implicit runs its own threads; a multithreaded BLAS underneath only oversubscribes the
    # cores (implicit warns about exactly this) and breaks bit-reproducibility.
    with threadpool_limits(1, "blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AlternatingLeastSquares(factors=p.factors, regularization=p.regularization, alpha=1.0,
                                        iterations=p.iterations, num_threads=p.threads, random_state=seed)
        model.fit(matrix, show_progress=False)
    users = np.asarray(model.user_factors, dtype=np.float32)
    items = np.asarray(model.item_factors, dtype=np.float32)
    users[np.diff(matrix.indptr) == 0] = 0
    items[np.bincount(matrix.indices, minlength=matrix.shape[1]) == 0] = 0
    return users, items


class ALS(Channel):
    """Implicit ALS u2i (see the module docstring).

    Learned state: ``user_factors_``, ``item_factors_`` (float32, zero rows where
    there is no data) and ``index_`` (the faiss index of the engaged items).
    """

    name = "als"
    description = "ALS: implicit-feedback matrix factorisation, behaviour-weighted confidence, faiss u2i"
    Params = ALSParams
    fit_cost = 1
    exclude_interacted: ClassVar[bool] = True

    def fit(self, data: TrainData) -> "ALS":
        p = self.params
        matrix = confidence(data, p)
        self.user_factors_, self.item_factors_ = fit_factors(matrix, p, data.seed)
        items = np.flatnonzero(np.bincount(matrix.indices, minlength=data.n_items) > 0)
        self.index_ = VectorIndex.build(self.item_factors_[items], items, p)
        return self

    def recommend(self, data: TrainData, n: int, users: np.ndarray | None = None) -> pl.DataFrame:
        return search_queries(data, self.index_, lambda rows: self.user_factors_[rows], n,
                              exclude_interacted=self.exclude_interacted, user_block=self.params.user_block,
                              users=users)
