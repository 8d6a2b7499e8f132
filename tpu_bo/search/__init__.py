"""What to try next: the search space, the Gaussian-process suggester and the samplers.

No TensorFlow here. :class:`SearchSpace` holds the parameters and their roles (runtime or
structural); :class:`Suggester` is ``bayes_opt``'s process with a fitted noise term, behind
:class:`BayesOptSampler`, the default Optuna sampler; :func:`make_sampler` names every sampler
``--sampler`` offers. ``tpu_bo.search.recommend`` ranks trials by the model's posterior.
"""

from tpu_bo._lazy import exports

__all__ = ["BayesOptSampler", "Param", "SearchSpace", "Suggester", "make_sampler"]
__getattr__, __dir__ = exports(
    __name__,
    {
        "BayesOptSampler": "sampler",
        "Param": "space",
        "SearchSpace": "space",
        "Suggester": "suggester",
        "make_sampler": "sampler",
    },
)
