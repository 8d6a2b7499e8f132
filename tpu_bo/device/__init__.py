"""Where a study runs: the accelerator, its strategy, and the lockstep workers of ``TF_CONFIG``.

:func:`get_strategy` builds the ``tf.distribute.Strategy`` (TPU, GPUs, CPU replicas or the
default); ``tpu_bo.device.tpu_env`` sets the TPU plugin's environment before TensorFlow is
imported (``import tpu_bo`` calls it); ``tpu_bo.device.cluster`` reads ``TF_CONFIG``.
Importing this package imports no TensorFlow.
"""

from tpu_bo._lazy import exports

__all__ = ["NoAcceleratorError", "get_strategy", "is_chief", "lockstep_workers"]
__getattr__, __dir__ = exports(
    __name__,
    {
        "NoAcceleratorError": "accelerator",
        "get_strategy": "accelerator",
        "is_chief": "cluster",
        "lockstep_workers": "cluster",
    },
)
