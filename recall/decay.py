"""Recency decay, defined once for every engine.

``halving(age, half_life) = 0.5 ** (age / half_life)``: a weight that halves every
``half_life`` (age and half-life in the same unit; no half-life, or an infinite one,
means no decay). Written with Python operators only, so the same function builds a
number, a numpy array, a polars expression or a Spark column: the local channels and
their Spark twins call it instead of restating the formula.

``log_damping(n) = 1 / log(1 + n)``: the weight of an entity with ``n`` interactions
(IUF of itemCF, IIF of userCF, sequence length of association). numpy's ``log1p``
only: the Spark modules evaluate it on the driver over the distinct counts
(:func:`recall.spark.ops.numpy_lookup`), since the JVM's log1p may differ in the last bit.
"""

from __future__ import annotations

import math

import numpy as np

DAY = 86400.0  # seconds
HOUR = 3600.0


def halving(age, half_life: float | None):
    """``0.5 ** (age / half_life)``, or ``1.0`` without a (finite) half-life."""
    if half_life is None or math.isinf(half_life):
        return 1.0
    return 0.5 ** (age / half_life)


def log_damping(n):
    """``1 / log(1 + n)`` element-wise (numpy): a very active user, or a very common item, says less."""
    return 1.0 / np.log1p(n)
