"""Input pipelines, built once per study and shared by every trial.

``load_datasets`` reads an image-classification dataset, by TFDS name or the built-in offline
``digits`` set, and returns persistent *distributed iterators*:

* train: cached, shuffled with a fixed seed (reshuffled each pass), repeated forever, batched to
  the global batch with ``drop_remainder=True`` (TPUs need static shapes), normalised and
  prefetched. Trials draw their steps from this one stream; none rebuilds it.
* eval and test: every example exactly once per evaluation. The last
  batch is padded to the global batch with examples of weight 0, so shapes stay static and
  the padding does not count. The stream repeats, so each evaluation runs exactly
  ``steps`` steps from the same iterator.

The ``digits`` dataset (8x8 handwritten digits, 1,797 images) ships inside scikit-learn, so the
default study needs no download. Its ``train`` split is the first 1,500 images and ``test``
the remaining 297; split strings take TFDS's slice syntax (``train[:90%]``, ``train[100:]``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from tpu_bo.config import Config
from tpu_bo.errors import ConfigError, first_line

_DIGITS_TRAIN = 1500
_SLICE = re.compile(r"^(?P<name>\w+)(?:\[(?P<start>-?\d+%?)?:(?P<end>-?\d+%?)?\])?$")


@dataclasses.dataclass
class EvalData:
    """A split prepared for exact, static-shape evaluation.

    Attributes:
      split: The split string, e.g. ``train[90%:]``.
      num_examples: Real examples in the split; each is counted exactly once.
      steps: Global batches per evaluation (the last one padded with weight-0 examples).
      iterator: A persistent distributed iterator over ``(image, label, weight)`` batches.
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
      input_shape: Shape of one example, e.g. ``(28, 28, 1)``.
      num_classes: Number of label classes.
      global_batch: Examples per step across all replicas.
      num_train: Examples in the train split.
      steps_per_epoch: ``num_train // global_batch`` (the remainder is carried into the
        next epoch by the repeated stream, not dropped from the study).
      train_iterator: The persistent distributed iterator of ``(image, label)`` batches.
      eval: The evaluation split that scores trials.
      test: The test split (scored once, for the best trial), or ``None`` without one.
    """

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    global_batch: int
    num_train: int
    steps_per_epoch: int
    train_iterator: Any
    eval: EvalData
    test: EvalData | None


def load_datasets(
    config: Config, strategy: tf.distribute.Strategy, *, source: Source | None = None
) -> Datasets:
    """Loads, caches and distributes the study's datasets once.

    Args:
      config: Uses ``dataset``, ``data_dir``, ``download``, the three split fields,
        ``batch_size`` (the global batch), ``shuffle_buffer`` and ``seed``.
      strategy: The distribution strategy the iterators feed.
      source: Where the examples come from instead of ``config.dataset``, e.g.
        :func:`synthetic_source` (the smoke check measures throughput on it).

    Returns:
      The study's :class:`Datasets`.

    Raises:
      ConfigError: unknown dataset, unreadable split, a batch larger than the train split or
        not divisible by the replicas.
    """
    batch = config.batch_size
    replicas = strategy.num_replicas_in_sync
    if batch % replicas:
        raise ConfigError(
            "batch_size",
            f"the global batch {batch} does not divide by the {replicas} replicas; "
            f"use a multiple of {replicas}.",
        )
    source = source or _source(config)
    train, num_train = source.load(config.train_split, "train_split")
    if num_train < batch:
        raise ConfigError(
            "batch_size",
            f"the global batch {batch} is larger than the {num_train} examples of "
            f"--train_split={config.train_split}.",
        )
    train = _train_pipeline(train, num_train, batch, config.shuffle_buffer, config.seed)
    train_iterator = _distribute(strategy, train)

    def make_eval(split: str, flag: str) -> EvalData:
        return _eval_data(source, split, flag, batch, strategy, dataset=config.dataset)

    eval_data = make_eval(config.eval_split, "eval_split")
    return Datasets(
        name=config.dataset,
        input_shape=source.input_shape,
        num_classes=source.num_classes,
        global_batch=batch,
        num_train=num_train,
        steps_per_epoch=num_train // batch,
        train_iterator=train_iterator,
        eval=eval_data,
        # Built now, so a bad --test_split stops the study before its first trial.
        test=make_eval(config.test_split, "test_split") if config.test_split else None,
    )


def _train_pipeline(
    train: tf.data.Dataset, num_train: int, batch: int, shuffle_buffer: int, seed: int
) -> tf.data.Dataset:
    """The endless, shuffled stream of full global batches that every trial draws from."""
    buffer = shuffle_buffer or num_train
    return (
        train.cache()
        .shuffle(min(buffer, num_train), seed=seed, reshuffle_each_iteration=True)
        .repeat()
        .batch(batch, drop_remainder=True)  # static shapes for TPUs
        .map(_normalize, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def _eval_data(
    source: Source,
    split: str,
    flag: str,
    batch: int,
    strategy: tf.distribute.Strategy,
    *,
    dataset: str,
) -> EvalData:
    """``split`` once per ``steps`` batches, the last padded with examples of weight 0."""
    ds, n = source.load(split, flag)
    if n == 0:
        raise ConfigError(flag, f"split {split!r} of {dataset} has no examples.")
    steps = -(-n // batch)
    ds = ds.map(lambda x, y: (x, y, tf.constant(1.0)))
    pad = steps * batch - n
    if pad:
        blank = (
            tf.zeros(source.input_shape, tf.uint8),
            tf.constant(0, tf.int64),
            tf.constant(0.0),
        )
        ds = ds.concatenate(tf.data.Dataset.from_tensors(blank).repeat(pad))
    ds = (
        ds.cache()
        .batch(batch, drop_remainder=True)
        .map(_normalize, num_parallel_calls=tf.data.AUTOTUNE)
        .repeat()
        .prefetch(tf.data.AUTOTUNE)
    )
    return EvalData(split=split, num_examples=n, steps=steps, iterator=_distribute(strategy, ds))


def _distribute(strategy: tf.distribute.Strategy, ds: tf.data.Dataset) -> Any:
    """A persistent distributed iterator over ``ds``."""
    return iter(strategy.experimental_distribute_dataset(_shard_by_data(ds)))


def _normalize(image: tf.Tensor, label: tf.Tensor, *rest: tf.Tensor) -> tuple[tf.Tensor, ...]:
    return (tf.cast(image, tf.float32) / 255.0, tf.cast(label, tf.int32), *rest)


def _shard_by_data(ds: tf.data.Dataset) -> tf.data.Dataset:
    # Each source is one file or in memory, so multi-worker runs must shard by element.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


@dataclasses.dataclass
class Source:
    """A dataset that yields ``(uint8 image, int64 label)`` for a split string."""

    input_shape: tuple[int, ...]
    num_classes: int
    load: Callable[[str, str], tuple[tf.data.Dataset, int]]


def _source(config: Config) -> Source:
    if config.dataset == "digits":
        return _digits_source()
    return _tfds_source(config)


def synthetic_source(
    *, train: int, eval: int, input_shape: tuple[int, ...] = (28, 28, 1), seed: int = 0
) -> Source:
    """Random MNIST-shaped images and labels, for measuring speed offline; nothing to learn.

    Its splits are ``train`` and ``eval`` with the given numbers of examples.
    """
    rng = np.random.default_rng(seed)
    sizes = {"train": train, "eval": eval}

    def load(split: str, flag: str) -> tuple[tf.data.Dataset, int]:
        if split not in sizes:
            raise ConfigError(flag, f"{split!r} is not a synthetic split (train, eval).")
        n = sizes[split]
        images = rng.integers(0, 256, size=(n, *input_shape), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).astype(np.int64)
        return tf.data.Dataset.from_tensor_slices((images, labels)), n

    return Source(input_shape=tuple(input_shape), num_classes=10, load=load)


def _digits_source() -> Source:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixel values are 0..16; stretch them to 0..255 so every source normalises alike.
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int64)
    splits = {
        "train": (images[:_DIGITS_TRAIN], labels[:_DIGITS_TRAIN]),
        "test": (images[_DIGITS_TRAIN:], labels[_DIGITS_TRAIN:]),
    }

    def load(split: str, flag: str) -> tuple[tf.data.Dataset, int]:
        name, start, end = _parse_slice(split, flag, splits)
        x, y = splits[name]
        lo, hi = _resolve(start, len(x)), _resolve(end, len(x))
        lo = 0 if lo is None else lo
        hi = len(x) if hi is None else hi
        x, y = x[lo:hi], y[lo:hi]
        return tf.data.Dataset.from_tensor_slices((x, y)), len(x)

    return Source(input_shape=(8, 8, 1), num_classes=10, load=load)


def _parse_slice(
    split: str, flag: str, splits: dict[str, Any]
) -> tuple[str, str | None, str | None]:
    m = _SLICE.match(split.strip())
    if not m or m["name"] not in splits:
        raise ConfigError(
            flag,
            f"{split!r} is not a split of digits; use train or test, optionally sliced "
            "like train[:90%] or train[100:].",
        )
    return m["name"], m["start"], m["end"]


def _resolve(bound: str | None, n: int) -> int | None:
    if bound is None:
        return None
    if bound.endswith("%"):
        value = round(int(bound[:-1]) * n / 100)
    else:
        value = int(bound)
    if value < 0:
        value += n
    return max(0, min(n, value))


def _tfds_source(config: Config) -> Source:
    name = config.dataset
    builder = _tfds_builder(config)
    info = builder.info
    shape, num_classes = _image_classification_shape(name, info)

    def load(split: str, flag: str) -> tuple[tf.data.Dataset, int]:
        try:
            n = info.splits[split].num_examples
            ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
        except Exception as e:  # noqa: BLE001 - TFDS split errors have no common type
            available = ", ".join(sorted(info.splits.keys()))
            raise ConfigError(
                flag,
                f"cannot read split {split!r} of {name} ({first_line(e)}); "
                f"available splits: {available}.",
            ) from None
        return ds, n

    return Source(input_shape=shape, num_classes=num_classes, load=load)


def _tfds_builder(config: Config) -> Any:
    """The TFDS builder of ``config.dataset``, prepared (downloaded if allowed and missing)."""
    import tensorflow_datasets as tfds

    name = config.dataset
    try:
        builder = tfds.builder(name, data_dir=config.data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ConfigError(
            "dataset",
            f"unknown dataset {name!r}: it is neither 'digits' nor a TFDS dataset name "
            "(see tfds.list_builders()).",
        ) from None
    except Exception as e:  # noqa: BLE001 - TFDS raises many types for a bad data_dir
        raise ConfigError(
            "data_dir", f"cannot open {name!r} in {config.data_dir}: {first_line(e)}."
        ) from None
    if builder.is_prepared():
        return builder
    where = config.data_dir or "TFDS's default data dir"
    if not config.download:
        raise ConfigError(
            "data_dir",
            f"{name!r} is not prepared in {where} and --nodownload is set; point "
            "--data_dir at a prepared TFDS directory.",
        )
    print(f"data: preparing {name} in {where} (downloads it once)...", flush=True)
    try:
        builder.download_and_prepare()
    except Exception as e:  # noqa: BLE001 - network and permission errors vary
        raise ConfigError(
            "data_dir",
            f"{name!r} is not prepared in {where} and could not be downloaded "
            f"({first_line(e)}); point --data_dir at a prepared TFDS directory.",
        ) from None
    return builder


def _image_classification_shape(name: str, info: Any) -> tuple[tuple[int, ...], int]:
    """The input shape and number of classes of a TFDS dataset's supervised keys.

    Raises:
      ConfigError: naming ``dataset``, unless it is a fixed-size image-classification dataset.
    """
    keys = info.supervised_keys
    if not keys or len(keys) != 2:
        raise ConfigError("dataset", f"{name!r} has no (input, label) supervised keys.")
    image_feature, label_feature = info.features[keys[0]], info.features[keys[1]]
    shape = tuple(getattr(image_feature, "shape", ()) or ())
    num_classes = getattr(label_feature, "num_classes", None)
    if len(shape) != 3 or None in shape or not num_classes:
        raise ConfigError(
            "dataset",
            f"{name!r} is not a fixed-size image-classification dataset "
            f"(input shape {shape}, classes {num_classes}).",
        )
    return shape, int(num_classes)
