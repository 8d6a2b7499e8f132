"""The Gaussian process's kernel: an amplitude times an ARD Matern 2.5 on [0, 1] coordinates,
plus noise, and the priors that make its fit a MAP one.

* ``unit``: distances on coordinates scaled to [0, 1] (one-hot choices stay as they are), with
  length scales bounded to [0.01, 100] ranges: bayes_opt measures raw coordinates, where a
  dropout's width of 0.4 and a log learning rate's 3 share one length scale.
* ``ard`` (with ``unit``): one length scale per coordinate, with the dimension-scaled
  log-normal prior of BoTorch's defaults (Hvarfner et al., 2024: LogNormal(sqrt(2) + log(d) / 2,
  sqrt(3)) on each length scale), and an amplitude with Optuna GPSampler's Gamma(2, 1) prior.
  Without priors 7 hyperparameters are not fitted from a few dozen points (a capped fit found
  spikes); with them a coordinate is flat until the data say otherwise.
* ``noise``: a ``WhiteKernel`` whose variance, in units of the scores' variance (sklearn's
  ``normalize_y``), is fitted in ``NOISE_BOUNDS`` with the Gamma(1.1, rate 30) prior of Optuna's
  GPSampler.

:func:`log_prior` is the negative log prior and its gradient in the kernel's log
hyperparameters (sklearn's ``theta``), :func:`prior_mode` the start of every fit. See
:mod:`tpu_bo.search.suggester` ("Noise") for why. No TensorFlow.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

NOISE_BOUNDS, NOISE_START, NOISE_PRIOR = (1e-6, 1.0), 1e-2, (1.1, 30.0)
LENGTH_SCALE_BOUNDS = (1e-2, 1e2)  # on [0, 1]: under 1% of a range is noise, over 100 flat
AMPLITUDE_BOUNDS, AMPLITUDE_PRIOR = (1e-2, 1e2), (2.0, 1.0)  # Gamma(2, rate 1), mode 1
LENGTH_PRIOR_SCALE = math.sqrt(3.0)  # log-normal, location sqrt(2) + log(d) / 2


def make_kernel(bo: Any, *, unit: bool, noise: bool, ard: bool = False) -> Any:
    """The kernel for a ``bayes_opt.BayesianOptimization``'s process, before any fit: the
    amplitude and the length scales start at their priors' modes."""
    from sklearn.gaussian_process.kernels import ConstantKernel, WhiteKernel

    if unit and ard:
        d = len(bo.space.bounds)
        start = math.exp(_length_location(d) - LENGTH_PRIOR_SCALE**2)
        kernel = ConstantKernel(1.0, AMPLITUDE_BOUNDS) * _unit_kernel(bo.space, [start] * d)
    else:
        kernel = _unit_kernel(bo.space, 1.0) if unit else bo._gp.kernel
    return kernel + WhiteKernel(NOISE_START, NOISE_BOUNDS) if noise else kernel


def has_priors(kernel: Any) -> bool:
    """Whether ``kernel`` (a :func:`make_kernel`) has an amplitude and ARD length scales."""
    inner = getattr(kernel, "k1", kernel) if _has_noise(kernel) else kernel
    return hasattr(inner, "k1") and hasattr(inner.k1, "constant_value")


def log_prior(kernel: Any, theta: np.ndarray) -> tuple[float, np.ndarray]:
    """The negative log prior of ``theta`` (the log hyperparameters of a :func:`make_kernel`)
    and its gradient: the noise's Gamma, and with ARD the amplitude's Gamma and each length
    scale's log-normal (densities of the values, as Optuna and BoTorch put them)."""
    theta = np.asarray(theta, dtype=float)
    value, gradient = 0.0, np.zeros_like(theta)
    if _has_noise(kernel):
        value, gradient[-1] = _gamma(theta[-1], *NOISE_PRIOR)
    if has_priors(kernel):
        value_a, gradient[0] = _gamma(theta[0], *AMPLITUDE_PRIOR)
        lengths = theta[1 : len(theta) - _has_noise(kernel)]
        mu, var = _length_location(len(lengths)), LENGTH_PRIOR_SCALE**2
        value += value_a + float(np.sum((lengths - mu) ** 2 / (2 * var) + lengths))
        gradient[1 : 1 + len(lengths)] = (lengths - mu) / var + 1.0
    return value, gradient


def prior_draws(kernel: Any, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` starts for a fit besides the priors' mode: with ARD, log length scales drawn
    from their log-normal (the amplitude and the noise at their starts); without, uniform in
    the log bounds, as sklearn's restarts. Within the kernel's bounds."""
    bounds = kernel.bounds
    if not has_priors(kernel):
        return rng.uniform(bounds[:, 0], bounds[:, 1], size=(count, len(bounds)))
    theta = np.repeat(kernel.theta[None], count, axis=0)
    d = len(kernel.theta) - 1 - _has_noise(kernel)
    draws = _length_location(d) + LENGTH_PRIOR_SCALE * rng.standard_normal((count, d))
    theta[:, 1 : 1 + d] = draws
    return np.clip(theta, bounds[:, 0], bounds[:, 1])


def with_prior(f: Callable, kernel: Any) -> Callable:
    """The negative log marginal likelihood ``f`` (value and gradient in the kernel's log
    hyperparameters) plus :func:`log_prior`: without one, a handful of points is as well
    explained by pure noise."""

    def penalised(theta: np.ndarray) -> tuple[float, np.ndarray]:
        value, gradient = f(theta)
        prior, prior_gradient = log_prior(kernel, theta)
        return value + prior, np.asarray(gradient, dtype=float) + prior_gradient

    return penalised


def _gamma(log_x: float, concentration: float, rate: float) -> tuple[float, float]:
    """A Gamma density's negative log (up to a constant) at exp(log_x), and its derivative in
    log_x."""
    x = math.exp(log_x)
    return rate * x - (concentration - 1) * log_x, rate * x - (concentration - 1)


def _length_location(d: int) -> float:
    return math.sqrt(2.0) + 0.5 * math.log(max(d, 1))


def _has_noise(kernel: Any) -> bool:
    from sklearn.gaussian_process.kernels import WhiteKernel

    return isinstance(getattr(kernel, "k2", None), WhiteKernel)


def _unit_kernel(space: Any, length_scale: Any) -> Any:
    from bayes_opt.parameter import wrap_kernel
    from sklearn.gaussian_process.kernels import Matern

    bounds = np.array(space.bounds, dtype=float)
    low, width = bounds[:, 0], np.where(np.ptp(bounds, axis=1) > 0, np.ptp(bounds, axis=1), 1.0)
    transform = space.kernel_transform

    def unit(x: np.ndarray) -> np.ndarray:
        return (transform(x) - low) / width

    matern = Matern(length_scale=length_scale, nu=2.5, length_scale_bounds=LENGTH_SCALE_BOUNDS)
    return wrap_kernel(matern, transform=unit)


class PowerWarp:
    """HEBO's output warping: a Yeo-Johnson power transform of the standardised scores, its
    exponent fitted by maximum likelihood (``scipy.stats.yeojohnson_normmax``, within
    ``WARP_LAMBDA``) on the successes, so a long tail (a dead region's chance accuracy, a
    failure's penalty) does not set the process's scale. Monotone: the best score stays the
    best; :meth:`inverse` and :meth:`slope` map a posterior back to the scores' units."""

    def __init__(self, scores: np.ndarray) -> None:
        from scipy.stats import yeojohnson_normmax

        scores = np.asarray(scores, dtype=float)
        self.mean, self.std = float(np.mean(scores)), float(np.std(scores)) or 1.0
        self.lam = 1.0
        if len(scores) > 2 and np.ptp(scores) > 0:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                lam = float(yeojohnson_normmax((scores - self.mean) / self.std))
            if math.isfinite(lam):
                self.lam = min(max(lam, WARP_LAMBDA[0]), WARP_LAMBDA[1])

    def __call__(self, y: np.ndarray) -> np.ndarray:
        x, lam = (np.asarray(y, dtype=float) - self.mean) / self.std, self.lam
        positive = x >= 0
        out = np.empty_like(x)
        xp, xn = x[positive], x[~positive]
        out[positive] = np.log1p(xp) if lam == 0 else ((xp + 1) ** lam - 1) / lam
        out[~positive] = -np.log1p(-xn) if lam == 2 else -((1 - xn) ** (2 - lam) - 1) / (2 - lam)
        return out

    def inverse(self, w: np.ndarray) -> np.ndarray:
        w, lam = np.asarray(w, dtype=float), self.lam
        positive = w >= 0
        out = np.empty_like(w)
        wp, wn = w[positive], w[~positive]
        if lam == 0:
            out[positive] = np.expm1(wp)
        else:
            out[positive] = np.maximum(wp * lam + 1, 1e-12) ** (1 / lam) - 1
        if lam == 2:
            out[~positive] = -np.expm1(-wn)
        else:
            out[~positive] = 1 - np.maximum(1 - (2 - lam) * wn, 1e-12) ** (1 / (2 - lam))
        return out * self.std + self.mean

    def slope(self, y: np.ndarray) -> np.ndarray:
        """The transform's derivative at scores ``y``."""
        x, lam = (np.asarray(y, dtype=float) - self.mean) / self.std, self.lam
        return np.where(x >= 0, np.abs(x + 1) ** (lam - 1), np.abs(1 - x) ** (1 - lam)) / self.std


WARP_LAMBDA = (-2.0, 4.0)
