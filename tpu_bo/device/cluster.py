"""The lockstep workers that ``TF_CONFIG`` names, read without TensorFlow.

With ``TF_CONFIG`` naming several workers (a chief and workers, GPU or CPU hosts), every
*lockstep worker* runs the same study under ``MultiWorkerMirroredStrategy``: the same journal
replayed, the same seeds, the same all-reduced scores, so the same suggestions and the same
collective programs in the same order; only the chief writes. (A study that many independent
*workers* share through a database is another thing: :mod:`tpu_bo.study.shared`.)
"""

from __future__ import annotations

import json
import os
from typing import Any

from tpu_bo.errors import ConfigError


def is_chief() -> bool:
    """Whether this process writes the study's files.

    With ``TF_CONFIG`` naming several workers, every worker runs the same study in lockstep
    (same seed, same all-reduced scores, so the same suggestions); only the chief, or worker 0
    when there is no chief, writes the journal and summaries. Without ``TF_CONFIG``, the one
    process is the chief.
    """
    return lockstep_workers() <= 1 or lockstep_index() == 0


def lockstep_workers() -> int:
    """The number of processes ``TF_CONFIG`` names (chief and workers); 0 without it."""
    cluster = _tf_config().get("cluster", {})
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def lockstep_index() -> int:
    """This process's place among :func:`lockstep_workers`: the chief first, then the workers."""
    config = _tf_config()
    task = config.get("task", {})
    has_chief = bool(config.get("cluster", {}).get("chief"))
    if task.get("type") == "chief":
        return 0
    return int(task.get("index", 0)) + (1 if has_chief else 0)


def _tf_config() -> dict[str, Any]:
    try:
        config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    except json.JSONDecodeError:
        config = None
    if not isinstance(config, dict):
        raise ConfigError("accelerator", "the TF_CONFIG environment variable is not a JSON object.")
    return config
