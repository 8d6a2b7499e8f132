"""The suggestion engine: ``bayes_opt`` driven point by point over a :class:`SearchSpace`.

``Suggester`` wraps ``bayes_opt.BayesianOptimization`` the way its advanced tour does
(``suggest`` -> evaluate -> ``register``) and adds what a hyperparameter study needs:

* the space's transforms: log-scale parameters live as log10 in the sampler, ints and
  choices are bayes_opt's typed parameters;
* minimisation, by registering negated scores (bayes_opt only maximises);
* failed trials, registered one spread (best minus worst) below the worst score of the
  successful trials so far, and held back until two successes differ: a failure is worse than
  any finished trial, and the penalty stays on the scale of the scores instead of a made-up
  number that would flatten the Gaussian process's view of everything else;
* ``xi`` (for ``ei``/``poi``) measured in units of the standard deviation of the scores so far
  when ``scale_xi`` is on, instead of bayes_opt's raw target units (see ``bench/`` for the
  measurement behind the default);
* optional domain reduction, applied after every observation as ``maximize`` would;
* pending points (:meth:`Suggester.pending`): a trial still running is registered at the best
  score so far (the "max" lie of ``ConstantLiar``), which pushes the next point away from it.
  :class:`tpu_bo.search.sampler.BayesOptSampler` replays a study through these methods.

**Noise.** A one-epoch validation score is a noisy draw: the same point with another seed
scores differently. bayes_opt's process (Matern 2.5, ``alpha=1e-6``) interpolates every score,
noise included, and expected improvement then chases the luckiest draws. With ``noise`` (the
default) the kernel gets a ``WhiteKernel`` term whose variance (in units of the scores'
variance, ``normalize_y``) is fitted in [1e-6, 1] with the Gamma(1.1, rate 30) prior of Optuna's
GPSampler (a MAP fit: a few points are not explained away as pure noise); expected improvement
is then computed on the objective itself (the noise-free posterior) over the best posterior
mean at an observed point (the "plug-in" incumbent), not over the best draw. The ``auto``
acquisition (the default) goes further once the fitted noise passes ``NOISY`` (0.5%) of the
scores' variance: expected improvement, even over the posterior mean, keeps exploiting small
differences the noise makes, and UCB (``kappa``) explores instead. On a deterministic
objective the fitted noise stays at its floor, so ``auto`` is expected improvement as before.
Distances are measured on coordinates scaled to [0, 1] (``unit``): bayes_opt's one length
scale on raw coordinates made a dropout's width of 0.4 look flat next to a log learning rate's
width of 3.

**The model (issue 27).** With ``ard`` (the default) the kernel is an amplitude times a Matern
2.5 with one length scale per coordinate, fitted as a MAP with BoTorch's dimension-scaled
log-normal prior on the length scales, Optuna's Gamma(2, 1) on the amplitude and the noise's
Gamma above (:mod:`tpu_bo.search.kernel`), from the priors' mode and ``FIT_RESTARTS`` draws
of the prior. With ``warp`` (the default) the process models a Yeo-Johnson power transform of
the scores (HEBO's output warping, :class:`tpu_bo.search.kernel.PowerWarp`): a long tail of
bad scores (a dead learning rate, a failure's penalty) no longer sets its scale, and
:meth:`Suggester.posterior` maps back to the scores' units. A failed trial's penalty is
conditioned on with almost no noise (``FAILED_NOISE``) and kept out of the hyperparameter fit
(``fit_failures``): with a large fitted noise it used to be explained away as a noisy draw,
and the process kept proposing the diverging region. ``acquisition="logei"`` is log expected
improvement (:func:`tpu_bo.search.acquisition.log_h`), measured but not the default.
Each choice is measured in ``bench/RESULTS.md``, "optimizer_quality".
:meth:`Suggester.posterior` gives the model's mean and standard deviation of the objective at
any points, which :mod:`tpu_bo.search.recommend` uses to recommend a trial.

**Bounded work.** bayes_opt's ``suggest`` refits the kernel every time and maximises the
acquisition with one ``predict`` call per finite difference (or a differential evolution run to
convergence when there is an int or choice): 0.3-3 s in 5-D, unbounded. :meth:`Suggester.suggest`
keeps bayes_opt's model (process, kernel, transforms, acquisitions) and caps each step by a count:

* the kernel's hyperparameters are refit only when the count of real observations (lies
  excluded) reaches a point of :func:`refit_point`'s schedule, on the first n_k of them (thinned
  to ``FIT_POINTS``), by ``1 + FIT_RESTARTS`` L-BFGS-B runs of ``FIT_EVALUATIONS`` likelihood
  evaluations at most; otherwise the last fitted kernel is reused (``optimizer=None``);
* the acquisition is scored on ``CANDIDATES`` random points in one batch (fewer past
  ``CANDIDATE_CELLS`` candidates x points); one L-BFGS-B of ``POLISH_EVALUATIONS`` batched
  posteriors moves the continuous coordinates of the best ``STARTS`` and of the best observation
  together; ``DISCRETE_PASSES`` passes then try every int and choice value;
* on one BLAS thread: the matrices are small, a second thread made fits 5-20 times slower on a
  busy host, and results then do not depend on the host's core count.

Nothing is timed out by the clock: proposals would depend on how busy the host was, and a
resumed study or another worker would propose differently (docs/DESIGN.md contracts 7 and 9).
``Suggester.work`` counts what was spent. A fit depends only on its data and random stream
(``fit_seed`` and n_k), so it is memoised by a digest of its data: a process with an empty memo
recomputes what a warm one reuses. :meth:`Suggester.settle` keeps that data out of reach of
trials finishing out of order.

This module does not import TensorFlow; ``bench.optimizer_quality`` measures it on its own.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import math
import warnings
from collections.abc import Callable, MutableMapping
from typing import Any

import numpy as np

from tpu_bo.search.acquisition import capped_lbfgsb, log_h, maximise
from tpu_bo.search.kernel import PowerWarp, log_prior, make_kernel, prior_draws
from tpu_bo.search.space import SearchSpace

REFIT_ALWAYS, REFIT_GROWTH = 12, 1.1  # refit at every count up to 12, then every 10 % more
UNSETTLED_MAX = 16  # refit data may reach this many observations past the settled prefix
FIT_POINTS, FIT_RESTARTS, FIT_EVALUATIONS = 200, 2, 30
NOISY = 0.005  # acquisition "auto": UCB above this noise fraction (noise std > 7% of scores')
BASE_ALPHA = 1e-6  # bayes_opt's jitter on the diagonal
FAILED_NOISE = 1e-4  # a failure's noise variance, in units of the scores' variance


def refit_point(n: int) -> int:
    """The observation count at which the schedule last refit the kernel, for ``n`` observations."""
    point = min(n, REFIT_ALWAYS)
    while max(point + 1, math.ceil(point * REFIT_GROWTH)) <= n:
        point = max(point + 1, math.ceil(point * REFIT_GROWTH))
    return point


class Suggester:
    """Proposes hyperparameters and learns from their scores.

    Args:
      space: The search space.
      seed: Seeds random starting points and the acquisition's optimiser.
      maximize: Whether larger scores are better.
      acquisition: ``auto`` (``ei`` while the fitted noise is under ``NOISY`` of the scores'
        variance, ``ucb`` above it), ``ei``, ``logei`` (its log), ``ucb`` or ``poi``.
      xi: Exploration of ``ei``/``poi``.
      kappa: Exploration of ``ucb``.
      scale_xi: Measure ``xi`` in standard deviations of the scores so far.
      domain_reduction: Shrink the bounds around the best point as observations arrive
        (bayes_opt's ``SequentialDomainReductionTransformer``; float and log spaces only).
      fit_seed: Seeds the kernel's hyperparameter fits (default ``seed``).
      memo: Fitted hyperparameters by (``fit_seed``, n_k, digest of the data) to reuse and
        extend; a mapping that only saves fits, which are recomputed identically without it.
      noise: Fit an observation noise term (a ``WhiteKernel``) instead of interpolating every
        score: see the module docstring, "Noise".
      unit: Measure distances on coordinates scaled to [0, 1] (bayes_opt measures them on the
        raw ones, where a dropout's 0.4 and a log learning rate's 3 share one length scale).
      ard: With ``unit``, one length scale per coordinate and an amplitude, under priors (see
        the module docstring, "The model").
      fit_failures: Fit the kernel's hyperparameters on the failures' penalties too (by
        default only on the scores; the failures are conditioned on either way).
      warp: Model a power transform of the scores (see "The model").
    """

    def __init__(
        self,
        space: SearchSpace,
        *,
        seed: int = 0,
        maximize: bool = True,
        acquisition: str = "auto",
        xi: float = 0.0,
        kappa: float = 2.576,
        scale_xi: bool = True,
        domain_reduction: bool = False,
        fit_seed: int | None = None,
        memo: MutableMapping[Any, np.ndarray] | None = None,
        noise: bool = True,
        unit: bool = True,
        ard: bool = True,
        fit_failures: bool = False,
        warp: bool = True,
    ) -> None:
        from bayes_opt import BayesianOptimization, SequentialDomainReductionTransformer
        from bayes_opt import acquisition as acq

        _quiet_bayes_opt()

        self.space = space
        self.sign = 1.0 if maximize else -1.0
        self.acquisition = acquisition
        self.xi = xi
        self.scale_xi = scale_xi
        self._ucb = acq.UpperConfidenceBound(kappa=kappa)
        if acquisition == "ucb":
            function = self._ucb
        elif acquisition == "poi":
            function = acq.ProbabilityOfImprovement(xi=xi)
        else:
            function = acq.ExpectedImprovement(xi=xi)
        self._base = function
        with warnings.catch_warnings():
            # bayes_opt flags int/choice parameters as experimental; tests cover our use of them.
            warnings.filterwarnings("ignore", message="Non-float parameters")
            self.bo = BayesianOptimization(
                f=None,
                pbounds=space.pbounds(),
                acquisition_function=function,
                random_state=seed,
                verbose=0,
                # Int and choice parameters can repeat a point; a noisy objective may want that.
                allow_duplicate_points=True,
                bounds_transformer=(
                    SequentialDomainReductionTransformer() if domain_reduction else None
                ),
            )
        self.unit, self.noise, self.ard = unit, noise, ard and unit
        self.fit_failures, self.warp = fit_failures, warp
        self._warp: PowerWarp | None = None  # the scores' warping at the last conditioning
        self._target = np.zeros(0)  # the scores the process was fitted on (warped)
        self._kernel = make_kernel(self.bo, unit=unit, noise=noise, ard=ard)  # before any fit
        self._noise_level = 0.0  # the fitted noise fraction, after a fit
        self.fit_seed = seed if fit_seed is None else fit_seed
        self.memo = {} if memo is None else memo
        self.work: collections.Counter[str] = collections.Counter()  # what suggestions cost
        self._ok_scores: list[float] = []
        self._pending_failed: list[dict[str, Any]] = []
        self._real: list[bool] = []  # per registered point: an observation, not a pending lie
        self._failed: list[bool] = []  # per registered point: a failure at its penalty
        self._settled: int | None = None

    @property
    def observed(self) -> int:
        """Points registered with bayes_opt so far."""
        return len(self.bo.space)

    def suggest(self, *, random: bool = False) -> dict[str, Any]:
        """The next hyperparameters to try: a random point, or the acquisition's best.

        The first guided suggestion falls back to a random point while nothing is registered.
        """
        if random or self.observed == 0:
            return self.space.from_sampler(self.bo.random_sample(1)[0])
        self.work["suggestions"] += 1
        with _threadpools().limit(limits=1, user_api="blas"):
            self._condition()
            x = maximise(self._acquisition(), self.bo)
        return self.space.from_sampler(self.bo.space.array_to_params(x))

    def settle(self) -> None:
        """Declares the observations so far final (later ones only follow them): the kernel is
        refit on a prefix of these, or of all but the newest ``UNSETTLED_MAX``. Default: all."""
        self._settled = sum(self._real)

    def observe(self, params: dict[str, Any], score: float | None, *, status: str = "ok") -> bool:
        """Registers a finished trial.

        Args:
          params: The trial's hyperparameters (as :meth:`suggest` gave them).
          score: Its objective value in natural units; ``None`` for a failed trial.
          status: ``ok``, ``pruned`` (registered with its score, but not counted among the
            successes that set the failure penalty) or ``failed`` (registered one spread below
            the worst success, once two successes differ).

        Returns:
          False when ``params`` lie outside the space (nothing was registered).
        """
        if not self.space.contains(params):
            return False
        if status == "failed" or score is None or not math.isfinite(score):
            self._pending_failed.append(params)
        else:
            self._register(params, self.sign * score)
            if status == "ok":
                self._ok_scores.append(self.sign * score)
        worst, best = min(self._ok_scores, default=0.0), max(self._ok_scores, default=0.0)
        # A failure is registered once two successes differ, one spread below the worst: with
        # a single success it would look exactly as good as that success.
        while best > worst and self._pending_failed:
            self._register(self._pending_failed.pop(), worst - (best - worst), failed=True)
        return True

    def pending(self, params: dict[str, Any]) -> None:
        """Registers a running trial at the best score so far (``ConstantLiar``'s "max" lie).

        The acquisition then sees no gain in proposing that point again, and looks elsewhere.
        """
        if self._ok_scores and self.space.contains(params):
            self._register(params, max(self._ok_scores), real=False)

    def _register(
        self, params: dict[str, Any], score: float, *, real: bool = True, failed: bool = False
    ) -> None:
        # Not bo.register, which rebuilds every point's record for its silent logger.
        self.bo.space.register(self.space.to_sampler(params), score)
        self._real.append(real)
        self._failed.append(failed)
        transformer = getattr(self.bo, "_bounds_transformer", None)
        if transformer is not None and self.observed > 1:
            self.bo.set_bounds(transformer.transform(self.bo.space))

    def _condition(self) -> None:
        """Fits the process to every point, with the kernel the refit schedule last fitted: the
        observations with the fitted noise, a failure at its penalty with almost none (the
        model must not explain a failed region away as noise)."""
        params, target = self.bo.space.params, self.bo.space.target
        real = np.asarray(self._real, dtype=bool)
        failed = np.asarray(self._failed, dtype=bool)
        count = int(real.sum())
        settled = count if self._settled is None else self._settled
        n_k = refit_point(max(settled, count - UNSETTLED_MAX, min(count, REFIT_ALWAYS)))
        first = np.flatnonzero(real)[:n_k]
        if not self.fit_failures and (~failed[first]).sum() > 1:
            first = first[~failed[first]]
        theta = self._theta(params[first], target[first], n_k)
        self._warp = None
        if self.warp:
            ok = real & ~failed
            self._warp = PowerWarp(target[ok] if ok.sum() > 2 else target)
            target = self._warp(target)
        self._target = target
        kernel = self._kernel.clone_with_theta(theta)
        if self.ard:  # variances fitted on these scores' spread, applied to all the scores'
            ratio = 2 * math.log(_spread(target[first]) / _spread(target))
            kernel = self._kernel.clone_with_theta(theta + _variances(self._kernel) * ratio)
        alpha: Any = BASE_ALPHA
        if self.noise:
            noise = self._noise_level = float(kernel.k2.noise_level)
            alpha = alpha + np.where(failed, min(noise, FAILED_NOISE), noise)
            kernel = kernel.k1
        gp = self.bo._gp
        gp.set_params(kernel=kernel, optimizer=None)
        gp.alpha = alpha
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn's convergence notes
            gp.fit(params, target)
        gp.alpha = BASE_ALPHA  # sklearn's predict does not read it; a later fit may

    def _theta(self, params: np.ndarray, target: np.ndarray, n_k: int) -> np.ndarray:
        """The kernel's hyperparameters fitted on these observations (memoised): the MAP of
        the marginal likelihood and the priors (:mod:`tpu_bo.search.kernel`), by capped
        L-BFGS-B runs from the priors' mode and ``FIT_RESTARTS`` seeded starts."""
        from sklearn.base import clone

        if len(target) > FIT_POINTS:
            keep = np.linspace(0, len(target) - 1, FIT_POINTS).round().astype(int)
            params, target = params[keep], target[keep]
        data = np.ascontiguousarray(params).tobytes() + np.ascontiguousarray(target).tobytes()
        digest = hashlib.blake2b(data, digest_size=16).hexdigest()
        key = (self.fit_seed, n_k, self.noise, self.unit, self.ard, self.warp, digest)
        theta = self.memo.get(key)
        if theta is not None:
            return theta
        self.work["fits"] += 1
        if self.warp:  # warped as the data were, so the fit depends on nothing else
            target = PowerWarp(target)(target)
        model = clone(self.bo._gp).set_params(kernel=self._kernel, optimizer=None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(params, target)

        def objective(t: np.ndarray) -> tuple[float, np.ndarray]:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                value, gradient = model.log_marginal_likelihood(
                    t, eval_gradient=True, clone_kernel=False
                )
            if not np.isfinite(value) or not np.all(np.isfinite(gradient)):
                return 1e25, np.zeros_like(t)
            prior, prior_gradient = log_prior(self._kernel, t)
            return -float(value) + prior, -np.asarray(gradient) + prior_gradient

        rng = np.random.default_rng((self.fit_seed * 1_000_003 + n_k) % 2**32)
        starts = np.vstack([self._kernel.theta, prior_draws(self._kernel, FIT_RESTARTS, rng)])
        best, best_value = starts[0], math.inf
        for start in starts:
            x, value, calls = capped_lbfgsb(
                objective, start, self._kernel.bounds, cap=FIT_EVALUATIONS
            )
            self.work["likelihood_evaluations"] += calls
            if value < best_value:
                best, best_value = x, value
        theta = self.memo[key] = np.asarray(best, dtype=float)
        return theta

    def _latent(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The fitted process's mean and variance of the objective itself (without the
        observation noise) at ``points``, in the units it was fitted in (``normalize_y``)."""
        from scipy.linalg import solve_triangular

        gp = self.bo._gp
        cross = gp.kernel_(points, gp.X_train_)
        v = solve_triangular(gp.L_, cross.T, lower=True, check_finite=False)
        return cross @ gp.alpha_, gp.kernel_.diag(points) - np.einsum("ij,ij->j", v, v)

    def _incumbent(self) -> float:
        """The best score so far, in fitted units: the best observed one or, with noise, the
        best posterior mean at an observed point (the "plug-in" of noisy expected improvement:
        the luckiest draw is not a level to beat)."""
        gp, space = self.bo._gp, self.bo.space
        inside = space.mask if space.mask.any() else np.ones(len(space), dtype=bool)
        if self.noise:
            real = inside & np.asarray(self._real, dtype=bool)
            mean, _ = self._latent(space.params[real if real.any() else inside])
            return float(np.max(mean))
        target = (self._target - gp._y_train_mean) / gp._y_train_std
        return float(np.max(target[inside]))

    def _acquisition(self) -> Callable[[np.ndarray], np.ndarray]:
        """The acquisition to minimise, on a batch of points, in the units the process was fitted
        in (sklearn's ``normalize_y``): the same argmax, and gradients of one scale."""
        gp, work = self.bo._gp, self.work
        target = self._target
        spread = float(np.std(target))
        function, log = self._base, self.acquisition == "logei"
        if self.acquisition == "auto" and self.noise_fraction > NOISY:
            function = self._ucb
        elif self.acquisition in ("ei", "poi", "auto", "logei"):
            function.y_max = self._incumbent()
            xi = self.xi * (spread if target.size > 1 else 0.0) if self.scale_xi else self.xi
            function.xi = xi / gp._y_train_std

        def acquisition(points: np.ndarray) -> np.ndarray:
            work["posterior_calls"] += 1
            work["posterior_points"] += len(points)
            mean, variance = self._latent(points)
            with np.errstate(all="ignore"):
                std = np.sqrt(np.maximum(variance, 1e-18))
                if log:
                    z = (mean - function.y_max - function.xi) / std
                    return -(log_h(z) + np.log(std))
                return -np.nan_to_num(function.base_acq(mean, std), nan=0.0)

        return acquisition

    def posterior(self, points: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """The process's mean and standard deviation of the objective (not of one noisy
        observation) at ``points``, in the scores' units, given every point registered.

        Raises:
          ValueError: nothing is registered yet.
        """
        if self.observed == 0:
            raise ValueError("posterior: no observation is registered yet")
        with _threadpools().limit(limits=1, user_api="blas"):
            self._condition()
            array = np.array(
                [self.bo.space.params_to_array(self.space.to_sampler(p)) for p in points]
            ).reshape(len(points), -1)
            mean, variance = self._latent(array)
        gp = self.bo._gp
        scale = float(np.atleast_1d(gp._y_train_std)[0])
        mean = mean * scale + float(np.atleast_1d(gp._y_train_mean)[0])
        std = np.sqrt(np.maximum(variance, 0.0)) * scale
        if self._warp is not None:  # back to the scores' units (the delta method for the std)
            mean = self._warp.inverse(mean)
            std = std / np.maximum(self._warp.slope(mean), 1e-12)
        return self.sign * mean, std

    @property
    def noise_fraction(self) -> float:
        """The fitted noise variance over the scores' variance (0 without ``noise``)."""
        return self._noise_level if self.noise else 0.0

    @property
    def noise_std(self) -> float:
        """The fitted observation noise's standard deviation, in the scores' units (0 without
        ``noise``); valid after a suggestion or :meth:`posterior`."""
        fraction = self.noise_fraction  # 0 without noise or before any fit
        if fraction == 0.0:
            return 0.0
        std = math.sqrt(fraction) * float(np.atleast_1d(self.bo._gp._y_train_std)[0])
        if self._warp is not None:  # in the scores' units near the best observation
            best = float(np.max(self.bo.space.target[np.asarray(self._real, dtype=bool)]))
            std /= max(float(self._warp.slope(np.array([best]))[0]), 1e-12)
        return std


@functools.cache
def _quiet_bayes_opt() -> None:
    """Silences bayes_opt's one print, a red "Data point ... is not unique" on stdout for every
    repeat of a point (repeats and pending points are expected here). Set on its module, so
    no other output, in no other thread, is touched."""
    from bayes_opt import target_space

    target_space.print = _silent


def _silent(*args: Any, **kwargs: Any) -> None: ...


def _spread(values: np.ndarray) -> float:
    """The standard deviation sklearn's ``normalize_y`` divides by (1 for constant values)."""
    std = float(np.std(values))
    return std if std > 0 else 1.0


def _variances(kernel: Any) -> np.ndarray:
    """1 at the log amplitude and the log noise of an ARD :func:`make_kernel`, 0 elsewhere."""
    mask = np.zeros(len(kernel.theta))
    mask[0] = 1.0
    if hasattr(kernel, "k2") and hasattr(kernel.k2, "noise_level"):
        mask[-1] = 1.0
    return mask


@functools.cache
def _threadpools() -> Any:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()  # made once: making one scans every loaded library
