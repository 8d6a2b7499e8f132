"""Accelerator selection on a machine with no TPU and no GPU (this one, and CI)."""

from __future__ import annotations

import pytest
import tensorflow as tf

from tpu_bo import accelerator
from tpu_bo.errors import ConfigError


def test_tpu_without_a_tpu_is_one_sentence_naming_the_flag():
    with pytest.raises(accelerator.NoAcceleratorError) as info:
        accelerator.get_strategy("tpu")
    error = info.value
    assert error.flag == "accelerator"
    assert "no TPU was found" in error.message and "--tpu=local" in error.message
    assert "\n" not in error.for_cli()


def test_named_tpu_that_does_not_resolve_is_reported():
    with pytest.raises(accelerator.NoAcceleratorError, match="check the TPU name"):
        accelerator.get_strategy("tpu", tpu="no-such-tpu-xyz")


def test_gpu_without_a_gpu():
    with pytest.raises(accelerator.NoAcceleratorError, match="sees no GPU"):
        accelerator.get_strategy("gpu")


def test_auto_falls_back_to_cpu_and_says_so(capsys):
    strategy = accelerator.get_strategy("auto")
    assert strategy.num_replicas_in_sync == 1
    assert accelerator.accelerator_kind(strategy) == "cpu"
    out = capsys.readouterr().out
    assert "accelerator=auto: no TPU" in out and "no GPU" in out and "on CPU" in out


def test_cpu_replicas_builds_a_mirrored_strategy():
    strategy = accelerator.get_strategy("cpu", cpu_replicas=2)
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    assert strategy.num_replicas_in_sync == 2
    assert "2 replicas on CPU:0, CPU:1" in accelerator.describe(strategy)


def test_more_cpu_replicas_than_the_running_runtime_has():
    with pytest.raises(ConfigError, match="already started with 2 CPU device"):
        accelerator.get_strategy("cpu", cpu_replicas=4)


def test_malformed_tf_config(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ConfigError, match="TF_CONFIG"):
        accelerator.get_strategy("cpu")


@pytest.mark.parametrize(
    ("tf_config", "chief"),
    [
        (None, True),
        ({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}, True),
        ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}, True),
        ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}, False),
        (
            {
                "cluster": {"chief": ["c:1"], "worker": ["a:1"]},
                "task": {"type": "worker", "index": 0},
            },
            False,
        ),
        ({"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "chief"}}, True),
    ],
)
def test_only_the_chief_writes(monkeypatch, tf_config, chief):
    import json

    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    assert accelerator.is_chief() is chief
