"""Where a study's examples come from: one :class:`Source` per kind of data.

A source turns a split string into an *unbatched* ``tf.data.Dataset`` of ``(features, label)``
examples and its number of examples. ``features`` is one tensor or a dict of tensors (a
multi-input model); ``label`` is one tensor or a nest of them. The kinds:

* ``digits``: 1,797 8x8 handwritten digits shipped with scikit-learn (no download), in one fixed
  shuffled order (:func:`digits_arrays`); ``train`` is the first 1,500 of it and ``test`` the
  rest.
* a TFDS name: its supervised keys, or the examples' dict keys chosen by ``--features`` and
  ``--label``, for any supervised TFDS dataset.
* ``package.module:function``: the function is called once, with no arguments, and returns a
  ``tf.data.Dataset`` (the ``train`` split) or a dict of split name to a Dataset or to a
  zero-argument callable returning one. Its examples are ``(features, label)`` pairs, or dicts
  from which ``--features``/``--label`` pick.
* Python objects (:func:`python_source`): ``(x, y)`` NumPy arrays (``x`` may be a dict) or
  Datasets, as ``model.fit`` takes them, for the splits ``train``, ``validation`` and ``test``.

Split strings take TFDS's slice syntax (``train[:90%]``, ``train[100:]``) for every kind.
``image_keys`` names the features that are images stored as uint8 pixels: the pipeline scales
those to [0, 1] after its cache (see :mod:`tpu_bo.data.pipeline`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from tpu_bo.config import Config, import_function
from tpu_bo.errors import ConfigError, first_line

_DIGITS_TRAIN = 1500
_DIGITS_SEED = 0  # the fixed shuffle of digits_arrays; changing it is a new study identity
_SLICE = re.compile(r"^(?P<name>[\w-]+)(?:\[(?P<start>-?\d+%?)?:(?P<end>-?\d+%?)?\])?$")
IMAGE = None  # the key of a single (non-dict) image feature in ``Source.image_keys``


@dataclasses.dataclass
class Source:
    """A dataset's splits.

    Attributes:
      name: The dataset's name, for messages.
      load: ``load(split, flag) -> (examples, count)``; ``count`` is ``None`` when unknown.
      num_classes: Label classes, when the data says so (TFDS ClassLabel, digits).
      image_keys: Feature keys holding uint8 images (``IMAGE`` for a single feature).
      names: The split names, when known up front.
      in_memory_bytes: The bytes of the arrays held in memory and made a dataset by
        ``tf.data.Dataset.from_tensor_slices`` (Python objects: ``python_source``), which
        embeds them in the dataset's graph.
    """

    name: str
    load: Callable[[str, str], tuple[tf.data.Dataset, int | None]]
    num_classes: int | None = None
    image_keys: frozenset[Any] = frozenset()
    names: frozenset[str] | None = None
    in_memory_bytes: int = 0


def make_source(config: Config, data: Mapping[str, Any] | None = None) -> Source:
    """The source of ``config.dataset`` (or of the Python objects in ``data``)."""
    if data is not None:
        return python_source(data, features=config.features, label=config.label)
    if config.dataset == "digits":
        return digits_source()
    if ":" in config.dataset:
        return function_source(config.dataset, features=config.features, label=config.label)
    return tfds_source(config)


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

    return Source("synthetic", load, num_classes=10, image_keys=frozenset({IMAGE}))


def digits_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The ``digits`` splits as NumPy arrays: ``{"train": (images, labels), "test": ...}``.

    Images are ``uint8[n, 8, 8, 1]`` (scikit-learn's pixels 0..16 stretched to 0..255), labels
    ``int64[n]``. scikit-learn stores the digits grouped by writer, so its last 297 images come
    from writers the first 1,500 never show: split in that order, ``test`` scored some ten points
    below the validation split. The 1,797 examples are therefore permuted first, by
    ``numpy.random.default_rng(0)``: a fixed order, the same in every run and on every host, so
    the splits (and ``train[90%:]``, the default eval split) mix the writers alike. A study of
    digits records this order in its identity (:mod:`tpu_bo.study.identity`).
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(_DIGITS_SEED).permutation(len(digits.target))
    images = np.round(digits.images[order] * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = digits.target[order].astype(np.int64)
    return {
        "train": (images[:_DIGITS_TRAIN], labels[:_DIGITS_TRAIN]),
        "test": (images[_DIGITS_TRAIN:], labels[_DIGITS_TRAIN:]),
    }


def digits_source() -> Source:
    """scikit-learn's 8x8 digits as uint8 images, split as :func:`digits_arrays` says."""
    splits = digits_arrays()
    load = _sliced("digits", {k: tf.data.Dataset.from_tensor_slices(v) for k, v in splits.items()})
    return Source(
        "digits", load, num_classes=10, image_keys=frozenset({IMAGE}), names=frozenset(splits)
    )


def python_source(data: Mapping[str, Any], *, features: str = "", label: str = "") -> Source:
    """Splits from Python objects: ``{"train": (x, y) or Dataset, "validation": ..., ...}``."""
    splits, in_memory = {}, 0
    for name, value in data.items():
        if value is None:
            continue
        flag = {"train": "data", "validation": "validation_data"}.get(name, f"{name}_data")
        splits[name] = _select(_as_dataset(value, flag), features, label, flag)
        if not isinstance(value, tf.data.Dataset):
            in_memory += sum(np.asarray(a).nbytes for a in tf.nest.flatten(value))
    return Source(
        "python data",
        _sliced("python data", splits),
        names=frozenset(splits),
        in_memory_bytes=in_memory,
    )


def python_study(
    config: Config, data: Any, validation_data: Any, test_data: Any
) -> tuple[Config, dict[str, Any] | None]:
    """The configuration and splits of a study on Python objects (``run_study(data=...)``).

    The dataset is called ``python``; ``validation_data`` becomes the eval split and
    ``test_data`` the test split when the configuration keeps their defaults. Without
    ``data``, the configuration is returned unchanged with no splits.
    """
    if data is None:
        if validation_data is not None or test_data is not None:
            raise ConfigError("data", "validation_data and test_data need data (the train split).")
        return config, None
    defaults = Config()
    changes: dict[str, Any] = {}
    if config.dataset == defaults.dataset:
        changes["dataset"] = "python"  # names the output directory and the study's identity
    if validation_data is not None and config.eval_split == defaults.eval_split:
        changes.update(train_split="train", eval_split="validation")
    if config.test_split == defaults.test_split:
        changes["test_split"] = "test" if test_data is not None else ""
    splits = {"train": data, "validation": validation_data, "test": test_data}
    return dataclasses.replace(config, **changes), splits


def function_source(spec: str, *, features: str = "", label: str = "") -> Source:
    """The splits a ``package.module:function`` returns (see the module docstring)."""
    function = import_function(spec, "dataset")
    try:
        value = function()
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's code may raise anything
        raise ConfigError(
            "dataset", f"{spec}() raised {type(e).__name__}: {first_line(e)}."
        ) from None
    if isinstance(value, tf.data.Dataset):
        value = {"train": value}
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(
            "dataset",
            f"{spec}() returned {type(value).__name__}, not a tf.data.Dataset or a dict of split "
            "name -> tf.data.Dataset.",
        )
    splits: dict[str, Any] = {}
    for name, ds in value.items():

        def opened(ds: Any = ds, name: str = name) -> tf.data.Dataset:
            ds = ds() if callable(ds) and not isinstance(ds, tf.data.Dataset) else ds
            if not isinstance(ds, tf.data.Dataset):
                raise ConfigError(
                    "dataset",
                    f"split {name!r} of {spec}() is {type(ds).__name__}, not a tf.data.Dataset.",
                )
            return _select(ds, features, label, "dataset")

        splits[str(name)] = opened
    return Source(spec, _sliced(spec, splits), names=frozenset(splits))


def _as_dataset(value: Any, flag: str) -> tf.data.Dataset:
    if isinstance(value, tf.data.Dataset):
        return value
    if isinstance(value, tuple) and len(value) == 2:
        x, y = value
        if len({len(a) for a in tf.nest.flatten((x, y))}) != 1:
            raise ConfigError(flag, "its features and labels have different numbers of examples.")
        return tf.data.Dataset.from_tensor_slices((x, y))
    raise ConfigError(
        flag, f"give an (x, y) pair of arrays or a tf.data.Dataset, not {type(value).__name__}."
    )


def _select(ds: tf.data.Dataset, features: str, label: str, flag: str) -> tf.data.Dataset:
    """``ds`` as ``(features, label)`` pairs, picking ``--features``/``--label`` from dicts."""
    spec = ds.element_spec
    keys = [k.strip() for k in features.split(",") if k.strip()]
    if isinstance(spec, Mapping):
        if not label:
            raise ConfigError(
                "label",
                f"the examples of --{flag} are dicts ({', '.join(spec)}); name the label with "
                "--label (and the features with --features).",
            )
        return ds.map(_picker(spec, keys or [k for k in spec if k != label], label))
    if not (isinstance(spec, tuple) and len(spec) == 2):
        raise ConfigError(
            flag, f"its examples must be (features, label) pairs or dicts, not {_kind(spec)}."
        )
    if label:
        raise ConfigError("label", f"the examples of --{flag} are (features, label) pairs already.")
    if keys:
        if not isinstance(spec[0], Mapping):
            raise ConfigError("features", "picks keys of dict features; these are one tensor.")
        picked = _picker(spec[0], keys, None)
        return ds.map(lambda x, y: (picked(x), y))
    return ds


def _picker(spec: Mapping[str, Any], keys: list[str], label: str | None) -> Callable[..., Any]:
    available = ", ".join(spec)
    for key, flag in [*((k, "features") for k in keys), *([(label, "label")] if label else [])]:
        if key not in spec:
            raise ConfigError(flag, f"{key!r} is not a key of the examples; they have {available}.")

    def pick(example: Mapping[str, Any]) -> Any:
        x = example[keys[0]] if len(keys) == 1 else {k: example[k] for k in keys}
        return x if label is None else (x, example[label])

    return pick


def _kind(spec: Any) -> str:
    return type(spec).__name__ if not isinstance(spec, tf.TensorSpec) else "one tensor"


def describe(spec: Any) -> str:
    """Type and shape of a TensorSpec or a nest of them, e.g. ``float32[]`` for a label."""
    return str(tf.nest.map_structure(lambda s: f"{s.dtype.name}{list(s.shape)}", spec))


def _sliced(name: str, splits: Mapping[str, Any]) -> Callable[[str, str], tuple[Any, int | None]]:
    """``load(split, flag)`` over named Datasets (or callables), with TFDS's slice syntax."""

    def load(split: str, flag: str) -> tuple[tf.data.Dataset, int | None]:
        m = _SLICE.match(split.strip())
        if not m or m["name"] not in splits:
            raise ConfigError(
                flag,
                f"{split!r} is not a split of {name}; use one of {', '.join(splits)}, optionally "
                "sliced like train[:90%] or train[100:].",
            )
        ds = splits[m["name"]]
        ds = ds() if callable(ds) else ds
        if m["start"] is None and m["end"] is None:
            known = int(ds.cardinality())
            return ds, known if known >= 0 else None
        n = count_examples(ds)
        lo, hi = _resolve(m["start"], n, 0), _resolve(m["end"], n, n)
        return ds.skip(lo).take(max(0, hi - lo)), max(0, hi - lo)

    return load


def count_examples(ds: tf.data.Dataset) -> int:
    """Examples in ``ds``: its cardinality when known, else counted in one pass."""
    n = int(ds.cardinality())
    if n >= 0:
        return n
    if n == tf.data.INFINITE_CARDINALITY:
        raise ConfigError("dataset", "a split repeats forever; return it without .repeat().")
    return int(ds.reduce(np.int64(0), lambda count, *_: count + 1))


def _resolve(bound: str | None, n: int, default: int) -> int:
    if bound is None:
        return default
    value = round(int(bound[:-1]) * n / 100) if bound.endswith("%") else int(bound)
    if value < 0:
        value += n
    return max(0, min(n, value))


def tfds_source(config: Config) -> Source:
    """A TFDS dataset: its supervised keys, or ``--features``/``--label`` of its examples."""
    name = config.dataset
    builder = _tfds_builder(config)
    info = builder.info
    keys = [k.strip() for k in config.features.split(",") if k.strip()]
    supervised = info.supervised_keys if not (keys or config.label) else None
    if supervised is not None and not (isinstance(supervised, tuple) and len(supervised) == 2):
        supervised = None
    label = config.label or (supervised[1] if supervised else "")
    keys = keys or ([supervised[0]] if supervised else [])
    if not label or not keys:
        raise ConfigError(
            "label" if not label else "features",
            f"{name!r} has no (input, label) supervised keys; choose them with --features and "
            f"--label among {', '.join(info.features.keys())}.",
        )
    tfds_feature = _tfds_feature_types()
    for key, flag in [*((k, "features") for k in keys), (label, "label")]:
        if key not in info.features:
            have = ", ".join(info.features.keys())
            raise ConfigError(flag, f"{key!r} is not a feature of {name}; it has {have}.")
    images = {k for k in keys if isinstance(info.features[k], tfds_feature)}
    image_keys = frozenset({IMAGE} if images and len(keys) == 1 else images)
    num_classes = getattr(info.features[label], "num_classes", None)

    def load(split: str, flag: str) -> tuple[tf.data.Dataset, int | None]:
        try:
            n = info.splits[split].num_examples
            ds = builder.as_dataset(split=split, shuffle_files=False)
        except Exception as e:  # noqa: BLE001 - TFDS split errors have no common type
            available = ", ".join(sorted(info.splits.keys()))
            raise ConfigError(
                flag,
                f"cannot read split {split!r} of {name} ({first_line(e)}); "
                f"available splits: {available}.",
            ) from None
        return ds.map(_picker(ds.element_spec, keys, label)), n

    return Source(name, load, num_classes=num_classes, image_keys=image_keys)


def _tfds_feature_types() -> type:
    import tensorflow_datasets as tfds

    return tfds.features.Image


def _tfds_builder(config: Config) -> Any:
    """The TFDS builder of ``config.dataset``, prepared (downloaded if allowed and missing)."""
    import tensorflow_datasets as tfds

    name = config.dataset
    try:
        builder = tfds.builder(name, data_dir=config.data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ConfigError(
            "dataset",
            f"unknown dataset {name!r}: it is neither 'digits', a TFDS dataset name "
            "(see tfds.list_builders()) nor package.module:function.",
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
