"""Lockstep studies: every lockstep worker must see the one study directory the chief writes.

With ``TF_CONFIG`` naming several workers, every *lockstep worker* runs the same study under
``MultiWorkerMirroredStrategy`` (:mod:`tpu_bo.device.cluster`): the same journal replayed, the
same seeds, the same all-reduced scores, so the same suggestions and the same collective
programs in the same order. Only the chief writes. Lockstep therefore needs every worker to
*read* what the chief wrote: a worker that replays a different journal (its own local disk,
say) runs different programs, and its collectives wait for peers that never come.

:func:`check_shared_output_dir` proves the directory is shared before the first trial: the
chief writes a random token into it, sends the token and its journal length to every worker
with an all-reduce, and every worker reads the file back. If any worker cannot, all of them
stop together with one sentence naming ``--output_dir``.
"""

from __future__ import annotations

import os
import random

import tensorflow as tf

from tpu_bo.device.cluster import is_chief, lockstep_index, lockstep_workers
from tpu_bo.errors import ConfigError
from tpu_bo.study.output_dir import WORKERS_CHECK, read_json, write_atomic


def check_shared_output_dir(
    strategy: tf.distribute.Strategy, output_dir: str, *, records: int
) -> None:
    """Stops every worker, together, unless all of them see the chief's ``output_dir``.

    Does nothing in a single-process study.

    Args:
      strategy: The study's ``MultiWorkerMirroredStrategy``.
      output_dir: The study directory, as this worker was given it.
      records: The trials this worker read from the journal there.

    Raises:
      ConfigError: naming ``output_dir``, on every worker, when any worker saw another
        directory or another journal.
    """
    workers = lockstep_workers()
    if workers <= 1:
        return
    path = os.path.join(output_dir, WORKERS_CHECK)
    token = 0
    if is_chief():
        token = random.SystemRandom().randrange(1, 2**20)
        tf.io.gfile.makedirs(output_dir)
        write_atomic(path, f'{{"token": {token}}}\n')
    sent = _all_reduce_sum(strategy, [float(token), float(records)] if is_chief() else [0.0, 0.0])
    chief_token, chief_records = round(sent[0]), round(sent[1])
    try:
        seen = (read_json(path) or {}).get("token")
    except Exception:  # noqa: BLE001 - unreadable is the same answer as absent
        seen = None
    mine = [0.0] * workers
    if seen != chief_token or records != chief_records:
        mine[lockstep_index()] = 1.0
    failed = [i for i, v in enumerate(_all_reduce_sum(strategy, mine)) if v > 0.5]
    if is_chief() and tf.io.gfile.exists(path):
        tf.io.gfile.remove(path)
    if failed:
        raise ConfigError(
            "output_dir",
            f"{output_dir} is not one directory shared by every worker: worker(s) "
            f"{', '.join(map(str, failed))} did not see the chief's files there; a lockstep "
            "study needs an --output_dir that all workers read, such as gs://BUCKET/study or a "
            "shared file system.",
        )


def mean_over_workers(strategy: tf.distribute.Strategy, value: float) -> float:
    """The mean of ``value`` over the lockstep workers (a collective: every worker calls it)."""
    return _all_reduce_sum(strategy, [value])[0] / lockstep_workers()


def _all_reduce_sum(strategy: tf.distribute.Strategy, values: list[float]) -> list[float]:
    """Sums ``values`` over every worker (each worker's replicas count once together)."""
    local = len(strategy.extended.worker_devices)
    share = tf.constant([v / local for v in values], tf.float64)

    @tf.function  # eager collectives work too, but TensorFlow warns about their overhead
    def reduce() -> tf.Tensor:
        per_replica = strategy.run(lambda: tf.identity(share))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return [float(v) for v in reduce().numpy()]
