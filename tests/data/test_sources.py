"""Sources: every kind of data as (features, label) examples, sliced and counted alike."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tpu_bo.config import Config
from tpu_bo.data.pipeline import in_memory_warning
from tpu_bo.data.sources import (
    count_examples,
    digits_arrays,
    digits_source,
    function_source,
    python_source,
    python_study,
    tfds_source,
)
from tpu_bo.errors import ConfigError

PINNED_LABELS = [6, 6, 6, 2, 5, 6, 6, 2, 2, 1]  # digits' first train labels, shuffled by seed 0


def test_digits_splits_take_the_slice_syntax():
    source = digits_source()
    assert source.load("train", "train_split")[1] == 1500
    ds, n = source.load("train[:90%]", "train_split")
    assert n == 1350 and count_examples(ds) == 1350
    assert source.load("train[-100:]", "eval_split")[1] == 100
    with pytest.raises(ConfigError, match="'validation' is not a split of digits"):
        source.load("validation", "eval_split")


def _nearest_neighbour_accuracy(x, y, queries, truth):
    x, queries = (a.reshape(len(a), -1).astype(np.float32) for a in (x, queries))
    distances = (queries**2).sum(1)[:, None] - 2 * queries @ x.T + (x**2).sum(1)[None]
    return float((y[distances.argmin(1)] == truth).mean())


def test_digits_test_split_mixes_the_writers_so_it_scores_like_the_eval_split():
    """scikit-learn's order groups the digits by writer; split unshuffled, the 297 test images
    came from writers the train split never shows, and a 1-nearest-neighbour model scored 0.95
    on them against 0.99 on the eval split (train[90%:]). Shuffled once, both score alike."""
    images, labels = digits_arrays()["train"]
    test_images, test_labels = digits_arrays()["test"]
    assert (len(labels), len(test_labels)) == (1500, 297)
    fit = images[:1350], labels[:1350]
    val = _nearest_neighbour_accuracy(*fit, images[1350:], labels[1350:])
    test = _nearest_neighbour_accuracy(*fit, test_images, test_labels)
    assert abs(val - test) < 0.02, (val, test)
    assert set(test_labels) == set(range(10)) and np.bincount(test_labels).min() >= 15


def test_digits_split_is_the_same_every_time_and_in_the_source():
    """A fixed permutation: every run and every host (lockstep workers each load the data)
    sees the same splits. The first labels are pinned, so a change of NumPy's generator, which
    would silently give every digits study other splits, fails here."""
    first, second = digits_arrays(), digits_arrays()
    for split in ("train", "test"):
        for a, b in zip(first[split], second[split], strict=True):
            np.testing.assert_array_equal(a, b)
    assert first["train"][1][:10].tolist() == PINNED_LABELS
    images, labels = next(iter(digits_source().load("train[:10]", "train_split")[0].batch(10)))
    np.testing.assert_array_equal(images.numpy(), first["train"][0][:10])
    assert labels.numpy().tolist() == PINNED_LABELS
    assert images.dtype == tf.uint8 and int(tf.reduce_max(images)) == 255


def test_python_arrays_with_dict_features_become_examples():
    x = {"a": np.zeros((10, 3), np.float32), "b": np.arange(10)}
    source = python_source({"train": (x, np.arange(10.0)), "validation": None})
    ds, n = source.load("train[8:]", "eval_split")
    features, label = next(iter(ds))
    assert n == 2 and set(features) == {"a", "b"} and float(label) == 8.0
    assert source.names == frozenset({"train"})
    with pytest.raises(ConfigError, match="different numbers of examples"):
        python_source({"train": (x, np.arange(9.0))})
    with pytest.raises(ConfigError, match="give an \\(x, y\\) pair"):
        python_source({"train": [1, 2]})


def test_python_study_names_its_splits():
    arrays = (np.zeros((4, 2)), np.zeros(4))
    config, splits = python_study(Config(), arrays, arrays, None)
    assert (config.dataset, config.train_split, config.eval_split, config.test_split) == (
        "python",
        "train",
        "validation",
        "",
    )
    assert splits["validation"] is arrays
    assert python_study(Config(), None, None, None) == (Config(), None)
    with pytest.raises(ConfigError, match="need data"):
        python_study(Config(), None, arrays, None)


def test_a_dataset_function_gives_named_splits_and_callables():
    source = function_source("tests.user_data:tabular")
    assert source.names == frozenset({"train", "validation"})
    ds, n = source.load("validation", "eval_split")
    assert n == 256 and isinstance(ds.element_spec[0], dict)
    train_only = function_source("tests.user_data:diabetes")
    assert train_only.load("test", "test_split")[1] == 90


@pytest.mark.parametrize(
    "spec,flag,words",
    [
        ("tests.user_data:not_datasets", "dataset", "returned list"),
        ("tests.user_data:nothing_here", "dataset", "has no function 'nothing_here'"),
        ("tests.nonexistent_module:f", "dataset", "cannot import module"),
    ],
)
def test_a_wrong_dataset_function_is_one_sentence(spec, flag, words):
    with pytest.raises(ConfigError) as error:
        function_source(spec)
    assert error.value.flag == flag and words in error.value.message


def test_dict_examples_need_a_label_and_tuples_refuse_one(tmp_path, monkeypatch):
    path = tmp_path / "t.tfrecord"
    from tests import user_data

    user_data.write_tfrecords(str(path))
    monkeypatch.setenv("TPU_BO_TFRECORDS", str(path))
    with pytest.raises(ConfigError) as error:
        function_source("tests.user_data:tfrecords").load("train", "train_split")
    assert error.value.flag == "label" and "are dicts (category, label, numeric)" in str(
        error.value
    )
    picked = function_source("tests.user_data:tfrecords", features="numeric", label="label")
    ds, n = picked.load("train[:10]", "train_split")
    assert n == 10 and ds.element_spec[0].shape == (4,)
    assert picked.load("train", "train_split")[1] is None  # counted later, in one pass
    with pytest.raises(ConfigError, match="pairs already"):
        function_source("tests.user_data:tabular", label="y").load("train", "train_split")
    with pytest.raises(ConfigError, match="picks keys of dict features"):
        function_source("tests.user_data:diabetes", features="x").load("train", "train_split")


def test_counting_refuses_an_endless_split():
    assert count_examples(tf.data.Dataset.range(5).filter(lambda i: i > 1)) == 3
    with pytest.raises(ConfigError, match="repeats forever"):
        count_examples(tf.data.Dataset.range(5).repeat())


def test_tfds_features_and_label_are_checked(mnist_dir):
    config = Config(dataset="mnist", data_dir=mnist_dir)
    source = tfds_source(config)
    assert source.num_classes == 10 and source.image_keys == frozenset({None})
    ds, n = source.load("test[:5]", "eval_split")
    assert n == 5 and ds.element_spec[0].shape == (28, 28, 1)
    with pytest.raises(ConfigError) as error:
        tfds_source(Config(dataset="mnist", data_dir=mnist_dir, features="image", label="digit"))
    assert error.value.flag == "label" and "it has image, label" in error.value.message


def test_arrays_on_a_pod_over_a_gigabyte_are_one_warning():
    x, y = np.zeros((10, 3), np.float32), np.zeros(10, np.int64)
    source = python_source({"train": (x, y), "validation": ({"a": x}, y)})
    assert source.in_memory_bytes == 2 * (x.nbytes + y.nbytes)
    assert in_memory_warning(2**30, 4) is None and in_memory_warning(3 * 2**30, 1) is None
    warning = in_memory_warning(3 * 2**30, 4)
    assert warning.startswith("data: 3.0 GB of in-memory arrays") and "4 hosts" in warning
    assert warning.count(". ") == 0 and "\n" not in warning  # one sentence
