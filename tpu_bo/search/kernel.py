"""The Gaussian process's kernel: bayes_opt's Matern 2.5, on [0, 1] coordinates, plus noise.

* ``unit``: distances on coordinates scaled to [0, 1] (one-hot choices stay as they are), with
  length scales bounded to [0.01, 100] ranges: bayes_opt measures raw coordinates, where a
  dropout's width of 0.4 and a log learning rate's 3 share one length scale.
* ``noise``: a ``WhiteKernel`` whose variance, in units of the scores' variance (sklearn's
  ``normalize_y``), is fitted in ``NOISE_BOUNDS`` with the Gamma(1.1, rate 30) prior of Optuna's
  GPSampler (:func:`with_prior` makes the fit a MAP one).

See :mod:`tpu_bo.search.suggester` ("Noise") for why. No TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

NOISE_BOUNDS, NOISE_START, NOISE_PRIOR = (1e-6, 1.0), 1e-2, (1.1, 30.0)
LENGTH_SCALE_BOUNDS = (1e-2, 1e2)  # on [0, 1]: under 1% of a range is noise, over 100 flat


def make_kernel(bo: Any, *, unit: bool, noise: bool) -> Any:
    """The kernel for a ``bayes_opt.BayesianOptimization``'s process, before any fit."""
    from sklearn.gaussian_process.kernels import WhiteKernel

    kernel = _unit_kernel(bo.space) if unit else bo._gp.kernel
    return kernel + WhiteKernel(NOISE_START, NOISE_BOUNDS) if noise else kernel


def with_prior(f: Callable, kernel: Any) -> Callable:
    """The negative log marginal likelihood ``f`` (value and gradient in the kernel's log
    hyperparameters) plus the noise's negative log prior: without one, a handful of points is
    as well explained by pure noise. ``kernel`` is a :func:`make_kernel` with noise."""
    index = len(kernel.k1.theta)  # theta: the Matern's, then log(noise)
    concentration, rate = NOISE_PRIOR

    def penalised(theta: np.ndarray) -> tuple[float, np.ndarray]:
        value, gradient = f(theta)
        noise = math.exp(theta[index])
        gradient = np.array(gradient, dtype=float)
        gradient[index] += rate * noise - (concentration - 1)
        return value + rate * noise - (concentration - 1) * theta[index], gradient

    return penalised


def _unit_kernel(space: Any) -> Any:
    from bayes_opt.parameter import wrap_kernel
    from sklearn.gaussian_process.kernels import Matern

    bounds = np.array(space.bounds, dtype=float)
    low, width = bounds[:, 0], np.where(np.ptp(bounds, axis=1) > 0, np.ptp(bounds, axis=1), 1.0)
    transform = space.kernel_transform

    def unit(x: np.ndarray) -> np.ndarray:
        return (transform(x) - low) / width

    return wrap_kernel(Matern(nu=2.5, length_scale_bounds=LENGTH_SCALE_BOUNDS), transform=unit)
