"""Input pipelines: built once, static shapes, every eval example counted exactly once."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tpu_bo.config import Config
from tpu_bo.data.pipeline import load_datasets
from tpu_bo.device.accelerator import get_strategy
from tpu_bo.errors import ConfigError


def _drain(strategy, data):
    """Every (label, weight) pair one evaluation pass sees, gathered from all replicas."""
    labels, weights = [], []
    for _ in range(data.steps):
        _, y, w = next(data.iterator)
        labels += [t.numpy() for t in strategy.experimental_local_results(y)]
        weights += [t.numpy() for t in strategy.experimental_local_results(w)]
    return np.concatenate(labels), np.concatenate(weights)


@pytest.mark.parametrize("replicas", [1, 2])
def test_digits_eval_counts_every_example_once(replicas):
    strategy = get_strategy("cpu", cpu_replicas=replicas)
    config = Config(dataset="digits", batch_size=64, eval_split="train[1400:]")
    data = load_datasets(config, strategy)
    assert data.input_shape == (8, 8, 1) and data.num_classes == 10
    assert data.eval.num_examples == 100 and data.eval.steps == 2  # 64 + 36 real, 28 padding
    from tpu_bo.data.sources import digits_arrays

    expected = digits_arrays()["train"][1][1400:]
    for _ in range(2):  # the same exact pass again, from the same persistent iterator
        labels, weights = _drain(strategy, data.eval)
        assert weights.sum() == 100
        np.testing.assert_array_equal(np.sort(labels[weights == 1]), np.sort(expected))


def test_train_batches_have_static_shapes_and_are_normalised():
    one = load_datasets(Config(dataset="digits", batch_size=32), get_strategy("cpu"))
    assert one.train_iterator.element_spec[0].shape.as_list() == [32, 8, 8, 1]  # no None
    strategy = get_strategy("cpu", cpu_replicas=2)
    data = load_datasets(Config(dataset="digits", batch_size=32), strategy)
    x, y = next(data.train_iterator)
    parts = strategy.experimental_local_results(x)
    assert [p.shape.as_list() for p in parts] == [[16, 8, 8, 1]] * 2  # 32 split over 2
    x = tf.concat(parts, 0).numpy()
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.9
    assert data.steps_per_epoch == 1350 // 32


def test_train_stream_is_seeded():
    strategy = get_strategy("cpu")
    a = load_datasets(Config(dataset="digits", seed=3), strategy)
    b = load_datasets(Config(dataset="digits", seed=3), strategy)
    c = load_datasets(Config(dataset="digits", seed=4), strategy)
    ya, yb, yc = (next(d.train_iterator)[1].numpy() for d in (a, b, c))
    np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(ya, yc)


def test_mnist_from_the_prepared_data_dir(mnist_dir):
    config = Config(dataset="mnist", data_dir=mnist_dir, batch_size=128)
    data = load_datasets(config, get_strategy("cpu"))
    assert (data.num_train, data.eval.num_examples) == (54_000, 6_000)
    assert data.input_shape == (28, 28, 1) and data.num_classes == 10
    test = data.test
    assert test.num_examples == 10_000 and test.steps == 79
    _, y, w = next(test.iterator)
    assert y.shape == (128,) and float(tf.reduce_sum(w)) == 128


def test_mnist_test_split_label_counts(mnist_dir):
    strategy = get_strategy("cpu")
    data = load_datasets(
        Config(dataset="mnist", data_dir=mnist_dir, batch_size=1000, eval_split="test"), strategy
    )
    labels, weights = _drain(strategy, data.eval)
    counts = np.bincount(labels[weights == 1], minlength=10)
    assert counts.sum() == 10_000 and list(counts[:4]) == [980, 1135, 1032, 1010]


@pytest.mark.parametrize(
    ("fields", "flag", "needle"),
    [
        ({"dataset": "no_such_dataset_xyz"}, "dataset", "unknown dataset 'no_such_dataset_xyz'"),
        ({"train_split": "validation"}, "train_split", "is not a split of digits"),
        ({"eval_split": "train[1500:]"}, "eval_split", "has no examples"),
        ({"test_split": "tset"}, "test_split", "is not a split of digits"),
        ({"batch_size": 4096}, "batch_size", "larger than the 1350 examples"),
    ],
)
def test_bad_data_settings_name_their_flag(fields, flag, needle):
    with pytest.raises(ConfigError) as info:
        load_datasets(Config(**{"dataset": "digits", **fields}), get_strategy("cpu"))
    assert info.value.flag == flag and needle in info.value.message


def test_batch_must_divide_by_replicas():
    with pytest.raises(ConfigError) as info:
        load_datasets(Config(dataset="digits", batch_size=33), get_strategy("cpu", cpu_replicas=2))
    assert info.value.flag == "batch_size"
    assert "does not divide by the 2 replicas" in info.value.message


def test_missing_tfds_dataset_without_download(tmp_path):
    config = Config(dataset="mnist", data_dir=str(tmp_path), download=False)
    with pytest.raises(ConfigError) as info:
        load_datasets(config, get_strategy("cpu"))
    assert info.value.flag == "data_dir" and "not prepared" in info.value.message


def test_bad_tfds_split(mnist_dir):
    config = Config(dataset="mnist", data_dir=mnist_dir, eval_split="validation")
    with pytest.raises(ConfigError) as info:
        load_datasets(config, get_strategy("cpu"))
    assert info.value.flag == "eval_split" and "available splits: test, train" in info.value.message


def test_release_in_background_frees_cycles_on_its_own_thread():
    import gc
    import threading

    from tpu_bo.data.pipeline import release_in_background

    freed = threading.Event()
    where = []

    class Node:
        def __del__(self):  # as a tf.data iterator's destructor, it may block
            where.append(threading.current_thread().name)
            freed.set()

    gc.disable()  # no automatic collection on this thread meanwhile
    try:
        node = Node()
        node.self = node  # a cycle: only a full collection frees it
        del node
        for _ in range(60):  # a collection the suite started may still be running
            release_in_background()
            if freed.wait(0.5):
                break
    finally:
        gc.enable()
    assert where == ["tpu_bo-release"]
