"""The study's data: a source per kind of data, and the pipeline built once per study.

:func:`make_source` reads digits, a TFDS dataset, a ``package.module:function`` or Python
arrays as unbatched ``(features, label)`` examples; :func:`load_datasets` turns a source's splits
into the distributed iterators every trial shares (:class:`Datasets`, :class:`EvalData`).
"""

from tpu_bo._lazy import exports

__all__ = ["Datasets", "EvalData", "Source", "load_datasets", "make_source"]
__getattr__, __dir__ = exports(
    __name__,
    {
        "Datasets": "pipeline",
        "EvalData": "pipeline",
        "Source": "sources",
        "load_datasets": "pipeline",
        "make_source": "sources",
    },
)
