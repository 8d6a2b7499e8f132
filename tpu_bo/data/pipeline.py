"""Input pipelines, built once per study and shared by every trial.

``load_datasets`` reads the study's splits from a :class:`tpu_bo.data.sources.Source` (``digits``, a
TFDS name, a ``package.module:function``, or Python arrays) and returns persistent *distributed
iterators*. Every kind of data goes through the same rules:

* each example is ``(features, label)``: ``features`` one tensor or a dict of tensors;
* ``--preprocess`` maps every example once, before the cache; float64 becomes float32 and int64
  becomes int32 (a TPU's types); every shape must then be static (a TPU compiles fixed shapes);
* train: cached, shuffled with a fixed seed (reshuffled each pass), repeated forever,
  ``--augment`` mapped over every example of every pass (after the cache), batched to the
  global batch with ``drop_remainder=True``, prefetched. Trials draw their steps from this one
  stream; none rebuilds it.
* eval and test: every example exactly once per evaluation. The last batch is padded to the
  global batch with copies of an example of weight 0, so shapes stay static and the padding
  does not count. The stream repeats, so each evaluation runs exactly ``steps`` steps.
* features a source marks as uint8 images (digits, TFDS ``Image`` features) are scaled to
  [0, 1] float32 after the cache, unless ``--preprocess`` already made them another type.
* on a TPU pod (more than one host), in-memory arrays over 1 GB get one warning
  (:func:`in_memory_warning`): ``from_tensor_slices`` embeds them in the graph that is sent to
  every host.
"""

from __future__ import annotations

import atexit
import dataclasses
import gc
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import tensorflow as tf

from tpu_bo.config import Config, import_function
from tpu_bo.data.sources import IMAGE, Source, count_examples, describe, make_source
from tpu_bo.errors import ConfigError, first_line

log = logging.getLogger("tpu_bo")


@dataclasses.dataclass
class EvalData:
    """A split prepared for exact, static-shape evaluation.

    Attributes:
      split: The split string, e.g. ``train[90%:]``.
      num_examples: Real examples in the split; each is counted exactly once.
      steps: Global batches per evaluation (the last one padded with weight-0 examples).
      iterator: A persistent distributed iterator over ``(features, label, weight)`` batches.
    """

    split: str
    num_examples: int
    steps: int
    iterator: Any


@dataclasses.dataclass
class Datasets:
    """Everything the trainer reads, built once per study.

    Attributes:
      name: The dataset's name.
      input_shape: Shape of one example's features, e.g. ``(28, 28, 1)``, or a dict of shapes
        for dict features; the model builder receives it.
      num_classes: Label classes (from the data's metadata, else the largest integer label
        plus one), or ``None`` for labels that are not class indices.
      element_spec: ``(features, label)`` TensorSpecs of one example as the model sees it.
      global_batch: Examples per step across all replicas.
      num_train: Examples in the train split.
      steps_per_epoch: ``num_train // global_batch`` (the remainder is carried into the
        next epoch by the repeated stream, not dropped from the study).
      train_iterator: The persistent distributed iterator of ``(features, label)`` batches.
      eval: The evaluation split that scores trials.
      test: The test split (scored once, for the best trial), or ``None`` without one.
    """

    name: str
    input_shape: tuple[int, ...] | dict[str, tuple[int, ...]]
    num_classes: int | None
    element_spec: tuple[Any, Any]
    global_batch: int
    num_train: int
    steps_per_epoch: int
    train_iterator: Any
    eval: EvalData
    test: EvalData | None
    make_train: Callable[[tf.data.Dataset, int, int], Any] | None = dataclasses.field(
        default=None, repr=False
    )
    splits: dict[str, tuple[tf.data.Dataset, int]] = dataclasses.field(
        default_factory=dict, repr=False
    )
    rebatch: Callable[[int], Datasets] | None = dataclasses.field(default=None, repr=False)

    def train_and_eval(self) -> tuple[Any, int]:
        """A new train stream over the train and eval splits together, and its steps per epoch.

        Built on demand (for the final model), with the train stream's rules.
        """
        (train, n_train), (held, n_held) = self.splits["train"], self.splits["eval"]
        n = n_train + n_held
        stream = self.make_train(train.concatenate(held).cache(), n, self.global_batch)
        return stream, n // self.global_batch

    def other_stream(self) -> Any:
        """A train stream of its own, in the study's order, apart from ``train_iterator``:
        ``--parallel_trials=auto`` times its steps on it, so that the study's stream is where
        it would be without the measurement (a seed gives the same trials either way)."""
        if self.make_train is None:
            return self.train_iterator
        train, n = self.splits["train"]
        return self.make_train(train, n, self.global_batch)

    def for_batch(self, batch: int | None) -> Datasets:
        """These datasets at global batch ``batch`` (a searched ``batch_size``): the same
        examples, with train, eval and test batched to it; built on first use, once per size,
        over the one cache of the train split. ``None`` or the study's own size is ``self``."""
        if batch is None or int(batch) == self.global_batch or self.rebatch is None:
            return self
        return self.rebatch(int(batch))

    def zeros(self, batch: int) -> tuple[Any, Any]:
        """A batch of ``batch`` all-zero examples (features, label), to build or probe a model."""

        def zero(spec: tf.TensorSpec) -> tf.Tensor:
            return tf.zeros((batch, *spec.shape), spec.dtype)

        return tf.nest.map_structure(zero, self.element_spec)


# Above this, in-memory arrays on a pod are worth a warning: a graph proto is capped at 2 GB.
IN_MEMORY_LIMIT = 2**30


def in_memory_warning(nbytes: int, hosts: int) -> str | None:
    """The one sentence for ``nbytes`` of in-memory arrays on a TPU of ``hosts`` hosts, or
    ``None`` (one host, or at most :data:`IN_MEMORY_LIMIT`)."""
    if hosts <= 1 or nbytes <= IN_MEMORY_LIMIT:
        return None
    return (
        f"data: {nbytes / 2**30:.1f} GB of in-memory arrays become a tf.data.Dataset through "
        "from_tensor_slices, which embeds them in the dataset's graph, and on this pod that "
        f"graph is serialised and sent to each of its {hosts} hosts (a graph is capped at "
        "2 GB); over 1 GB, give the data as files instead (TFRecord or TFDS: --dataset)."
    )


def _tpu_hosts(strategy: tf.distribute.Strategy) -> int:
    """The hosts of a TPUStrategy (``TPUExtended.num_hosts``: more than one on a pod), else 1."""
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return int(strategy.extended.num_hosts)
    return 1


def load_datasets(
    config: Config,
    strategy: tf.distribute.Strategy,
    *,
    source: Source | None = None,
    data: Mapping[str, Any] | None = None,
) -> Datasets:
    """Loads, caches and distributes the study's datasets once.

    Args:
      config: Uses ``dataset``, ``data_dir``, ``download``, ``features``, ``label``,
        ``preprocess``, ``augment``, the three split fields, ``batch_size`` (the global batch),
        ``shuffle_buffer`` and ``seed``.
      strategy: The distribution strategy the iterators feed.
      source: Where the examples come from instead of ``config.dataset``, e.g.
        :func:`synthetic_source` (the smoke check measures throughput on it).
      data: Python objects by split name, as :func:`tpu_bo.data.sources.python_source` takes.

    Raises:
      ConfigError: naming the flag, for data that cannot be read or does not fit the rules.
    """
    searched = _searched_batches(config, strategy)
    # A searched batch_size: the study's own datasets are at --batch_size if it is one of the
    # searched values, else at the first; Datasets.for_batch gives the others.
    if searched and config.batch_size not in searched:
        batch = searched[0]
    else:
        batch = _divides(config.batch_size, strategy, "batch_size")
    source = source or make_source(config, data)
    warning = in_memory_warning(source.in_memory_bytes, _tpu_hosts(strategy))
    if warning:
        log.warning("%s", warning)
    preprocess = import_function(config.preprocess, "preprocess") if config.preprocess else None
    augment = import_function(config.augment, "augment") if config.augment else None

    def split(name: str, flag: str) -> tuple[tf.data.Dataset, int]:
        return _examples(source, name, flag, preprocess)

    train, num_train = split(config.train_split, "train_split")
    largest = max([batch, *searched])
    _check_fits(num_train, largest, config, "param" if largest in searched else "batch_size")
    prepare = _scaler(source.image_keys, train.element_spec)
    element_spec = _check_augment(train.map(prepare), augment, config.augment)
    # One cache of the train split, read by the stream of every batch size.
    cached = train.cache()

    def make_train(ds: tf.data.Dataset, n: int, size: int) -> Any:
        pipeline = _train_pipeline(ds, n, config.shuffle_buffer, config.seed)
        return _distribute(strategy, _batched(pipeline, size, prepare, augment))

    eval_ds, num_eval = split(config.eval_split, "eval_split")
    _check_same_spec(eval_ds.element_spec, train.element_spec, "eval_split")
    test = None
    if _has_test(config, source):  # read now, so a bad --test_split stops the study at once
        test = split(config.test_split, "test_split")
        _check_same_spec(test[0].element_spec, train.element_spec, "test_split")
    input_shape = tf.nest.map_structure(lambda s: tuple(s.shape), element_spec[0])
    num_classes = source.num_classes or _num_classes(train, element_spec[1])
    name = source.name if config.dataset == "digits" or data is not None else config.dataset
    built: dict[int, Datasets] = {}

    def evaluated(split: tuple[tf.data.Dataset, int], field: str, size: int) -> EvalData:
        flag = f"{field}_split"
        split_name = getattr(config, flag)
        return _eval_data(*split, split_name, flag, size, strategy, prepare, source.name)

    def at(size: int) -> Datasets:
        if size not in built:
            built[size] = Datasets(
                name=name,
                input_shape=input_shape,
                num_classes=num_classes,
                element_spec=element_spec,
                global_batch=size,
                num_train=num_train,
                steps_per_epoch=num_train // size,
                train_iterator=make_train(cached, num_train, size),
                eval=evaluated((eval_ds, num_eval), "eval", size),
                test=None if test is None else evaluated(test, "test", size),
                make_train=make_train,
                splits={"train": (train, num_train), "eval": (eval_ds, num_eval)},
                rebatch=at,
            )
        return built[size]

    return at(batch)


def _searched_batches(config: Config, strategy: tf.distribute.Strategy) -> list[int]:
    """The values of a searched ``batch_size`` (``--param=batch_size:choice:32,64``), each
    checked against the replicas now, before any data is read."""
    space = config.resolved_space()
    if "batch_size" not in space.names:
        return []
    values = space["batch_size"].values()
    return [_divides(int(value), strategy, "param") for value in values]


def _has_test(config: Config, source: Source) -> bool:
    """Whether to score a test split: one is set, and the default ``test`` only if it exists."""
    if not config.test_split:
        return False
    default = config.test_split == Config().test_split
    return not (default and source.names is not None and config.test_split not in source.names)


def _examples(
    source: Source, split: str, flag: str, preprocess: Callable[..., Any] | None
) -> tuple[tf.data.Dataset, int]:
    """One split's examples: preprocessed, in TPU types, with static shapes, and counted."""
    ds, n = source.load(split, flag)
    if preprocess is not None:
        ds = _mapped(ds, preprocess, "preprocess")
    ds = ds.map(_tpu_types)
    _check_static(ds.element_spec, "preprocess" if preprocess is not None else "dataset")
    return ds, count_examples(ds) if n is None else n


def _mapped(ds: tf.data.Dataset, function: Callable[..., Any], flag: str) -> tf.data.Dataset:
    """``ds.map(function)``, whose result must again be ``(features, label)``."""
    try:
        out = ds.map(function, num_parallel_calls=tf.data.AUTOTUNE)
    except Exception as e:  # noqa: BLE001 - the user's function may raise anything
        raise ConfigError(
            flag, f"{_name(function)} failed on an example: {first_line(e)}."
        ) from None
    if not (isinstance(out.element_spec, tuple) and len(out.element_spec) == 2):
        raise ConfigError(
            flag, f"{_name(function)} must return a (features, label) pair, not {out.element_spec}."
        )
    return out


def _name(function: Callable[..., Any]) -> str:
    return f"{function.__module__}:{getattr(function, '__qualname__', function)}"


def _tpu_types(x: Any, y: Any) -> tuple[Any, Any]:
    """float64 -> float32 and int64 -> int32: the types a TPU computes in."""
    cast = {tf.float64: tf.float32, tf.int64: tf.int32}

    def convert(t: tf.Tensor) -> tf.Tensor:
        return tf.cast(t, cast[t.dtype]) if t.dtype in cast else t

    return tf.nest.map_structure(convert, (x, y))


def _check_static(spec: tuple[Any, Any], flag: str) -> None:
    for part, nest in zip(("features", "label"), spec, strict=True):
        paths = _paths(nest)
        for path, s in paths:
            if not s.shape.is_fully_defined():
                what = f"feature {path!r}" if path else f"the {part}"
                raise ConfigError(
                    flag,
                    f"{what} has shape {s.shape}, which is not static; a TPU compiles fixed "
                    "shapes: pad, crop or resize it in --preprocess.",
                )


def _paths(nest: Any) -> list[tuple[str, tf.TensorSpec]]:
    if isinstance(nest, Mapping):
        return [(str(k), v) for k, v in nest.items() if isinstance(v, tf.TensorSpec)]
    return [("", s) for s in tf.nest.flatten(nest)]


def _check_same_spec(spec: Any, train: Any, flag: str) -> None:
    if spec != train:
        raise ConfigError(
            flag,
            f"its examples {describe(spec)} differ from the train split's {describe(train)}.",
        )


def _divides(batch: int, strategy: tf.distribute.Strategy, flag: str) -> int:
    """``batch``, a global batch that must divide by the replicas: ``--batch_size``, or a value
    of a searched ``batch_size`` (``flag`` ``param``)."""
    replicas = strategy.num_replicas_in_sync
    if batch % replicas:
        what, fix = ("batch_size", "search multiples") if flag == "param" else (
            "the global batch", "use a multiple"
        )  # fmt: skip
        raise ConfigError(
            flag, f"{what} {batch} does not divide by the {replicas} replicas; {fix} of {replicas}."
        )
    return batch


def _check_fits(num_train: int, batch: int, config: Config, flag: str) -> None:
    """Every global batch, the largest searched one included, fits in the train split."""
    if num_train < batch:
        raise ConfigError(
            flag,
            f"the global batch {batch} is larger than the {num_train} examples of "
            f"--train_split={config.train_split}.",
        )


def _check_augment(ds: tf.data.Dataset, augment: Callable[..., Any] | None, spec_text: str) -> Any:
    """The examples' spec, which ``augment`` must keep."""
    before = ds.element_spec
    if augment is None:
        return before
    after = _mapped(ds, augment, "augment").element_spec
    if after != before:
        raise ConfigError(
            "augment",
            f"{spec_text} changed the examples from {describe(before)} to {describe(after)}; "
            "it must keep their shapes and types (do resizing in --preprocess).",
        )
    return before


def _scaler(image_keys: frozenset[Any], spec: tuple[Any, Any]) -> Callable[..., Any]:
    """Scales the uint8 image features to [0, 1] float32 (on examples or on batches)."""
    features = spec[0]
    if isinstance(features, Mapping):
        keys = {k for k in image_keys if k in features and features[k].dtype == tf.uint8}
    else:
        keys = {IMAGE} if IMAGE in image_keys and features.dtype == tf.uint8 else set()

    def scale(t: tf.Tensor) -> tf.Tensor:
        return tf.cast(t, tf.float32) / 255.0

    def prepare(x: Any, y: Any, *rest: Any) -> tuple[Any, ...]:
        if isinstance(x, Mapping):
            x = {k: scale(v) if k in keys else v for k, v in x.items()}
        elif keys:
            x = scale(x)
        return (x, y, *rest)

    return prepare


def _num_classes(train: tf.data.Dataset, label: Any) -> int | None:
    """The largest integer class label plus one, for scalar integer labels; else ``None``."""
    if not isinstance(label, tf.TensorSpec) or label.shape.rank != 0 or not label.dtype.is_integer:
        return None
    largest = train.map(lambda x, y: tf.cast(y, tf.int64)).reduce(
        tf.constant(-1, tf.int64), tf.maximum
    )
    return int(largest) + 1


def _train_pipeline(
    cached: tf.data.Dataset, num_train: int, shuffle_buffer: int, seed: int
) -> tf.data.Dataset:
    """The endless, shuffled stream of (already cached) examples that every trial draws from."""
    buffer = shuffle_buffer or num_train
    return cached.shuffle(min(buffer, num_train), seed=seed, reshuffle_each_iteration=True).repeat()


def _batched(
    ds: tf.data.Dataset,
    batch: int,
    prepare: Callable[..., Any],
    augment: Callable[..., Any] | None,
) -> tf.data.Dataset:
    """Full global batches (static shapes for TPUs), scaled, augmented on the host, prefetched."""
    if augment is None:
        ds = ds.batch(batch, drop_remainder=True).map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(lambda x, y: augment(*prepare(x, y)), num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.batch(batch, drop_remainder=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def _eval_data(
    ds: tf.data.Dataset,
    n: int,
    split: str,
    flag: str,
    batch: int,
    strategy: tf.distribute.Strategy,
    prepare: Callable[..., Any],
    dataset: str,
) -> EvalData:
    """``split`` once per ``steps`` batches, the last padded with examples of weight 0."""
    if n == 0:
        raise ConfigError(flag, f"split {split!r} of {dataset} has no examples.")
    steps = -(-n // batch)
    ds = ds.map(lambda x, y: (x, y, tf.constant(1.0)))
    pad = steps * batch - n
    if pad:
        blank = ds.take(1).map(lambda x, y, w: (x, y, tf.constant(0.0))).repeat(pad)
        ds = ds.concatenate(blank)
    ds = (
        ds.cache()
        .batch(batch, drop_remainder=True)
        .map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
        .repeat()
        .prefetch(tf.data.AUTOTUNE)
    )
    return EvalData(split=split, num_examples=n, steps=steps, iterator=_distribute(strategy, ds))


def _distribute(strategy: tf.distribute.Strategy, ds: tf.data.Dataset) -> Any:
    """A persistent distributed iterator over ``ds``."""
    return iter(strategy.experimental_distribute_dataset(_shard_by_data(ds)))


def _shard_by_data(ds: tf.data.Dataset) -> tf.data.Dataset:
    # Sources may be one file or in memory, so lockstep workers must shard by element.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


_RELEASING = threading.Lock()
_RELEASE_THREAD: list[threading.Thread] = []


def release_in_background() -> None:
    """Frees unreachable objects, the input pipelines of finished studies among them, in a
    background thread.

    A study's iterators sit in reference cycles (trainer, programs, traced functions), so
    Python frees them only in a full garbage collection, in whatever thread happens to run
    it. Destroying a tf.data iterator joins its autotuning thread, and that join was
    measured to wait up to 80 s with the CPU idle (a 2-replica ``MirroredStrategy``
    iterator, TF 2.21), in the middle of the next study's tracing or training. Collected
    here, the wait falls on a daemon thread while the caller goes on. At most one
    collection runs at a time; a call while one runs does nothing.

    A collection still running when the interpreter exits is waited for (:func:`_join`):
    a daemon thread stopped inside TensorFlow's destructors aborts the process
    ("terminate called ... exception not rethrown", exit status -6).
    """
    if not _RELEASING.acquire(blocking=False):
        return

    def collect() -> None:
        try:
            gc.collect()
        finally:
            _RELEASING.release()

    thread = threading.Thread(target=collect, name="tpu_bo-release", daemon=True)
    _RELEASE_THREAD[:] = [thread]
    thread.start()


@atexit.register
def _join() -> None:
    """Waits for a running collection before the interpreter finalizes (see above)."""
    for thread in _RELEASE_THREAD:
        thread.join()
