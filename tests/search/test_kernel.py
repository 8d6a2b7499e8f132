"""The kernel on [0, 1] coordinates and the noise prior (no TensorFlow)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tpu_bo.search.kernel import NOISE_PRIOR, make_kernel, with_prior
from tpu_bo.search.space import SearchSpace
from tpu_bo.search.suggester import Suggester


def test_distances_are_measured_on_unit_coordinates():
    space = SearchSpace.parse(["p:float:0.1:0.5", "lr:log:1e-4:1e-1"])
    bo = Suggester(space).bo
    kernel = make_kernel(bo, unit=True, noise=False)
    raw = make_kernel(bo, unit=False, noise=False)
    a, b = np.array([[0.1, -4.0]]), np.array([[0.5, -4.0]])  # the whole dropout range
    c = np.array([[0.1, -1.0]])  # the whole log learning-rate range
    assert kernel(a, b)[0, 0] == pytest.approx(kernel(a, c)[0, 0])
    assert raw(a, b)[0, 0] > raw(a, c)[0, 0]  # raw: dropout's range looks 7.5 times shorter


def test_the_noise_prior_adds_its_log_density_and_gradient():
    bo = Suggester(SearchSpace.parse(["x:float:0:1"])).bo
    kernel = make_kernel(bo, unit=True, noise=True)
    f = with_prior(lambda theta: (1.0, np.zeros_like(theta)), kernel)
    theta = np.array([0.0, math.log(0.1)])  # length scale 1, noise 0.1
    value, gradient = f(theta)
    a, rate = NOISE_PRIOR
    assert value == pytest.approx(1.0 + rate * 0.1 - (a - 1) * math.log(0.1))
    assert gradient[0] == 0.0 and gradient[1] == pytest.approx(rate * 0.1 - (a - 1))
