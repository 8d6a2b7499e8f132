"""The study: its trials in Optuna's storage, its output directory, and the rules of writing it.

:class:`Study` is ask/tell over an Optuna study with typed trials, one writer
(``tpu_bo.study.writer_lock``), an identity (``tpu_bo.study.identity``) and in-flight
checkpoints. :class:`OutputDir` names and reads every file of ``--output_dir``;
:class:`GFileJournal` is the journal backend the trials live in by default. ``tpu_bo.study.shared``
is the many-worker case, on PostgreSQL or SQLite.
"""

from tpu_bo._lazy import exports

__all__ = ["GFileJournal", "OutputDir", "Study", "WriterLock"]
__getattr__, __dir__ = exports(
    __name__,
    {
        "GFileJournal": "journal",
        "OutputDir": "output_dir",
        "Study": "study",
        "WriterLock": "writer_lock",
    },
)
