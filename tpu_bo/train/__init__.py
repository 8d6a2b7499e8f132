"""Training: the model, its heads, and the compiled programs whose slots hold trials.

:class:`Trainer` builds one :class:`Program` per (structure, width), K towers traced once, and
hands out :class:`Pack`s of its slots; ``tpu_bo.train.reset`` is the traced reset and PBT copy;
``tpu_bo.train.heads`` the default and compiled losses and metrics; ``tpu_bo.train.models`` the
built-in models and the builder contract; :class:`Dropout` and :class:`RuntimeValue` carry a
runtime hyperparameter into a model.
"""

from tpu_bo._lazy import exports

__all__ = ["Dropout", "EpochResult", "Pack", "Program", "RuntimeValue", "Trainer"]
__getattr__, __dir__ = exports(
    __name__,
    {
        "Dropout": "layers",
        "EpochResult": "pack",
        "Pack": "pack",
        "Program": "program",
        "RuntimeValue": "layers",
        "Trainer": "trainer",
    },
)
