"""A session of a study: :func:`run_study` and the loop it runs, from the first ask to the summary.

``tpu_bo.session.loop`` is the loop (packs, slots, the clock); ``tpu_bo.session.best`` the best
trial's weights; ``tpu_bo.session.ending`` the end (repeats, selection, test score, summary);
``tpu_bo.session.selection`` the choice of the best trial; ``tpu_bo.session.pbt``
population-based training; ``tpu_bo.session.final`` the final model; ``tpu_bo.session.lockstep``
the check that lockstep workers share one directory.
"""

from tpu_bo._lazy import exports

__all__ = ["Loop", "run_study"]
__getattr__, __dir__ = exports(__name__, {"Loop": "loop", "run_study": "run"})
