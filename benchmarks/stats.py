"""Welch's t-test without scipy.

The two-sided p-value of Student's t with ``df`` degrees of freedom is the
regularized incomplete beta function ``I_x(df/2, 1/2)`` at ``x = df / (df + t²)``,
computed here with its continued fraction (modified Lentz's method).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

__all__ = ["WelchResult", "mean_std", "regularized_incomplete_beta", "student_t_two_sided_p", "welch_t_test"]

_EPS = 1e-15
_TINY = 1e-300
_MAX_ITER = 10_000


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    # Modified Lentz evaluation of the continued fraction of I_x(a, b) (Numerical Recipes' betacf).
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _MAX_ITER + 1):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge for a={a}, b={b}, x={x}")


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """``I_x(a, b)``, the regularized incomplete beta function.

    Args:
        a: First shape parameter, > 0.
        b: Second shape parameter, > 0.
        x: Point in [0, 1].
    """
    if not (a > 0 and b > 0):
        raise ValueError(f"a and b should be > 0, got a={a!r}, b={b!r}")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x should be in [0, 1], got x={x!r}")
    if x == 0.0 or x == 1.0:
        return x
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    # The fraction converges fast for x < (a + 1) / (a + b + 2); use the symmetry otherwise.
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def student_t_two_sided_p(t: float, df: float) -> float:
    """``P(|T| >= |t|)`` for Student's t with ``df`` (> 0, not necessarily integer) degrees of freedom."""
    if not df > 0:
        raise ValueError(f"df should be > 0, got df={df!r}")
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 0.0
    return min(1.0, regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t)))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; 0 for a single value)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_std needs at least one value, got none")
    mean = math.fsum(values) / n
    if n == 1:
        return mean, 0.0
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


@dataclass(frozen=True)
class WelchResult:
    """Welch's unequal-variance t-test of ``mean(a) - mean(b)``.

    Attributes:
        t: The t statistic (positive when ``a``'s mean is larger).
        df: Welch–Satterthwaite degrees of freedom.
        p_value: Two-sided p-value.
    """

    t: float
    df: float
    p_value: float


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> WelchResult:
    """Welch's two-sided t-test that ``a`` and ``b`` have the same mean.

    Args:
        a: At least two observations.
        b: At least two observations.

    Returns:
        A :class:`WelchResult`. When both samples have zero variance, ``t`` is
        ±inf with ``p_value=0`` if the means differ, and ``t=0`` with ``p_value=1``
        if they are equal.
    """
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"welch_t_test needs at least 2 values per sample, got {len(a)} and {len(b)}")
    mean_a, sd_a = mean_std(a)
    mean_b, sd_b = mean_std(b)
    va, vb = sd_a ** 2 / len(a), sd_b ** 2 / len(b)
    se2 = va + vb
    diff = mean_a - mean_b
    if se2 == 0.0:
        if diff == 0.0:
            return WelchResult(t=0.0, df=float(len(a) + len(b) - 2), p_value=1.0)
        return WelchResult(t=math.copysign(math.inf, diff), df=float(len(a) + len(b) - 2), p_value=0.0)
    t = diff / math.sqrt(se2)
    df = se2 ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return WelchResult(t=t, df=df, p_value=student_t_two_sided_p(t, df))
