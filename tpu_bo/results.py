"""Reading a study's output directory, finished or not, without the trainer.

* :func:`load_records`: every trial of the study, as :class:`tpu_bo.TrialRecord`.
* :func:`load_best_model`: a fresh Keras model holding the best trial's saved weights.
* :func:`load_summary`: ``summary.json``.
* :func:`load_final_model`: the retrained best configuration of ``--final_epochs``.
"""

from __future__ import annotations

from typing import Any

import optuna

from tpu_bo.errors import ConfigError
from tpu_bo.records import TrialRecord
from tpu_bo.study.journal import GFileJournal
from tpu_bo.study.output_dir import (
    BEST_TRIAL,
    BEST_WEIGHTS,
    FINAL_MODEL,
    JOURNAL,
    SUMMARY,
    OutputDir,
)
from tpu_bo.study.trials import record
from tpu_bo.train import models


def load_records(output_dir: str, *, storage: str = "", study_name: str = "") -> list[TrialRecord]:
    """Every trial of the study in ``output_dir`` (or in ``storage``), by number.

    Reads only; safe while the study runs.

    Raises:
      ConfigError: naming ``output_dir`` when it holds no study.
    """
    files = OutputDir(output_dir, writer=False)
    if storage:
        backend: Any = storage
    elif files.exists(JOURNAL):
        backend = optuna.storages.JournalStorage(GFileJournal(files.path(JOURNAL), writer=False))
    else:
        raise ConfigError("output_dir", f"{output_dir} holds no study ({JOURNAL} is missing).")
    names = [s.study_name for s in optuna.get_all_study_summaries(backend)]
    if not names or (study_name and study_name not in names):
        raise ConfigError("output_dir", f"{output_dir} holds no study {study_name!r}.")
    study = optuna.load_study(study_name=study_name or names[0], storage=backend)
    return [record(t) for t in study.get_trials(deepcopy=False)]


def load_summary(output_dir: str) -> dict[str, Any] | None:
    """``summary.json`` of the study, or ``None`` before its first session ended."""
    return OutputDir(output_dir, writer=False).read_json(SUMMARY)


def load_best_model(output_dir: str, *, builder: models.Builder | None = None) -> Any:
    """Builds a fresh model of a study's best trial and loads its saved weights.

    Args:
      output_dir: The study's directory (local or ``gs://``).
      builder: The model builder, when the study's model was a function defined in a notebook
        (``__main__``) that cannot be imported by name.

    Returns:
      An uncompiled ``keras.Model`` holding the best trial's weights from its best epoch.

    Raises:
      ConfigError: naming ``output_dir``, when the directory holds no saved best trial.
    """
    files = OutputDir(output_dir, writer=False)
    info = files.read_json(BEST_TRIAL)
    if info is None:
        raise ConfigError("output_dir", f"{output_dir} holds no best trial (no {BEST_TRIAL}).")
    model = models.build_model(
        builder or models.get_builder(info["model"]),
        {**info["fixed"], **info["params"]},
        info["input_shape"],
        info["num_classes"],
    )
    models.load_model_weights(model, files.path(BEST_WEIGHTS))
    return model


def load_final_model(output_dir: str) -> Any:
    """The model a study's ``--final_epochs`` run exported, from ``final/model.keras``.

    Args:
      output_dir: The study's directory (local or ``gs://``: the file is copied locally first).

    Returns:
      The ``keras.Model`` as saved (compiled if its builder compiled it).

    Raises:
      ConfigError: naming ``output_dir``, when it holds no final model.
    """
    import os
    import tempfile

    import keras
    import tensorflow as tf

    import tpu_bo.train.layers  # noqa: F401 - registers tpu_bo>Dropout for deserialization

    files = OutputDir(output_dir, writer=False)
    if not files.exists(FINAL_MODEL):
        raise ConfigError(
            "output_dir",
            f"{output_dir} holds no final model (no {FINAL_MODEL}); run the study with "
            "--final_epochs=N to train and export one.",
        )
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, os.path.basename(FINAL_MODEL))
        tf.io.gfile.copy(files.path(FINAL_MODEL), local)
        return keras.models.load_model(local)
