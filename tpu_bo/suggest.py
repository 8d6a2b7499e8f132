"""The suggestion engine: ``bayes_opt`` driven point by point over a :class:`SearchSpace`.

``Suggester`` wraps ``bayes_opt.BayesianOptimization`` the way its advanced tour does
(``suggest`` -> evaluate -> ``register``) and adds what a hyperparameter study needs:

* the space's transforms: log-scale parameters live as log10 in the optimizer, ints and
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
  :class:`tpu_bo.sampler.BayesOptSampler` replays a study through these methods.

This module does not import TensorFlow; ``bench.optimizer_quality`` measures it on its own.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from tpu_bo.space import SearchSpace


class Suggester:
    """Proposes hyperparameters and learns from their scores.

    Args:
      space: The search space.
      seed: Seeds random starting points and the acquisition's optimiser.
      maximize: Whether larger scores are better.
      acquisition: ``ei``, ``ucb`` or ``poi``.
      xi: Exploration of ``ei``/``poi``.
      kappa: Exploration of ``ucb``.
      scale_xi: Measure ``xi`` in standard deviations of the scores so far.
      domain_reduction: Shrink the bounds around the best point as observations arrive
        (bayes_opt's ``SequentialDomainReductionTransformer``; float and log spaces only).
    """

    def __init__(
        self,
        space: SearchSpace,
        *,
        seed: int = 0,
        maximize: bool = True,
        acquisition: str = "ei",
        xi: float = 0.0,
        kappa: float = 2.576,
        scale_xi: bool = True,
        domain_reduction: bool = False,
    ) -> None:
        from bayes_opt import (
            BayesianOptimization,
            SequentialDomainReductionTransformer,
        )
        from bayes_opt import (
            acquisition as acq,
        )

        self.space = space
        self.sign = 1.0 if maximize else -1.0
        self.acquisition = acquisition
        self.xi = xi
        self.scale_xi = scale_xi
        if acquisition == "ucb":
            function = acq.UpperConfidenceBound(kappa=kappa)
        elif acquisition == "poi":
            function = acq.ProbabilityOfImprovement(xi=xi)
        else:
            function = acq.ExpectedImprovement(xi=xi)
        self._base = function
        with warnings.catch_warnings():
            # bayes_opt flags int/choice parameters as experimental; tests cover our use of them.
            warnings.filterwarnings("ignore", message="Non-float parameters")
            self.optimizer = BayesianOptimization(
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
        self._ok_scores: list[float] = []
        self._pending_failed: list[dict[str, Any]] = []

    @property
    def observed(self) -> int:
        """Points registered with the optimizer so far."""
        return len(self.optimizer.space)

    def suggest(self, *, random: bool = False) -> dict[str, Any]:
        """The next hyperparameters to try: a random point, or the acquisition's best.

        The first guided suggestion falls back to a random point while nothing is registered.
        """
        if random or self.observed == 0:
            return self.space.from_optimizer(self.optimizer.random_sample(1)[0])
        if self.acquisition in ("ei", "poi"):
            if self.scale_xi:
                scores = np.asarray(self.optimizer.space.target, dtype=float)
                spread = float(np.std(scores)) if scores.size > 1 else 0.0
                self._base.xi = self.xi * spread
            else:
                self._base.xi = self.xi
        return self.space.from_optimizer(self.optimizer.suggest())

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
            self._register(self._pending_failed.pop(), worst - (best - worst))
        return True

    def pending(self, params: dict[str, Any]) -> None:
        """Registers a running trial at the best score so far (``ConstantLiar``'s "max" lie).

        The acquisition then sees no gain in proposing that point again, and looks elsewhere.
        """
        if self._ok_scores and self.space.contains(params):
            self._register(params, max(self._ok_scores))

    def _register(self, params: dict[str, Any], score: float) -> None:
        self.optimizer.register(params=self.space.to_optimizer(params), target=score)
        transformer = getattr(self.optimizer, "_bounds_transformer", None)
        if transformer is not None and self.observed > 1:
            self.optimizer.set_bounds(transformer.transform(self.optimizer.space))
