"""``python -m tpu_bo.smoke``: the check to run first on a new accelerator.

``tpu_bo.smoke.checks`` runs the checks that need no TensorFlow (and the child CLI study) and
then ``tpu_bo.smoke.device``'s; ``tpu_bo.smoke.report`` prints their lines.
"""

from tpu_bo._lazy import exports

__all__ = ["main"]
__getattr__, __dir__ = exports(__name__, {"main": "checks"})
