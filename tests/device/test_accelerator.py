"""Accelerator selection on a machine with no TPU and no GPU (this one, and CI)."""

from __future__ import annotations

import pytest
import tensorflow as tf

from tpu_bo.device import accelerator
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
    with pytest.raises(ConfigError, match="already started with 3 CPU device"):
        accelerator.get_strategy("cpu", cpu_replicas=4)


def test_malformed_tf_config(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ConfigError, match="TF_CONFIG"):
        accelerator.get_strategy("cpu")


def test_auto_does_not_probe_a_machine_without_tpu_devices(monkeypatch, capsys):
    from tpu_bo.device import tpu_env

    calls = []
    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", calls.append)
    monkeypatch.setattr(tpu_env, "tpu_evidence", lambda: None)
    monkeypatch.delenv("TPU_NAME", raising=False)
    monkeypatch.delenv("COLAB_TPU_ADDR", raising=False)
    accelerator.get_strategy("auto")
    assert calls == []
    assert "no TPU (no TPU device on this machine" in capsys.readouterr().out


def test_auto_probes_the_tpu_once_per_process(monkeypatch, capsys):
    from tpu_bo.device import tpu_env

    monkeypatch.setattr(tpu_env, "tpu_evidence", lambda: "/dev/vfio/0")  # a TPU may be here
    calls = []
    real = tf.distribute.cluster_resolver.TPUClusterResolver

    def counting(*args, **kwargs):
        calls.append(kwargs.get("tpu"))
        return real(*args, **kwargs)

    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", counting)
    monkeypatch.setattr(accelerator, "_NO_TPU", {})
    for _ in range(3):
        accelerator.get_strategy("auto")
    assert calls == ["local"]
    lines = [line for line in capsys.readouterr().out.splitlines() if "accelerator=auto" in line]
    assert len(lines) == 3 and len(set(lines)) == 1  # the same reason, each time


def test_an_explicit_tpu_request_still_probes(monkeypatch):
    monkeypatch.setattr(accelerator, "_NO_TPU", {"local": "TPUs not found in the cluster"})
    with pytest.raises(accelerator.NoAcceleratorError):
        accelerator.get_strategy("tpu")


def test_a_tpu_machine_that_tensorflow_cannot_reach_names_the_plugin(monkeypatch):
    from tpu_bo.device import tpu_env

    setup = tpu_env.Setup(
        evidence="/dev/vfio/0",
        values={tpu_env.LIBRARY_VAR: None, tpu_env.C_API_VAR: None},
        set_here=(),
        problem=None,
    )
    monkeypatch.setattr(tpu_env, "SETUP", setup)
    with pytest.raises(accelerator.NoAcceleratorError) as info:
        accelerator.get_strategy("tpu")
    message = info.value.for_cli()
    assert "this machine has a TPU (/dev/vfio/0)" in message
    assert "TF_PLUGGABLE_DEVICE_LIBRARY_PATH is not set" in message and "\n" not in message


@pytest.mark.parametrize(
    ("details", "warned"),
    [
        ([{"device_name": "Tesla T4", "compute_capability": (7, 5)}], True),
        ([{"device_name": "NVIDIA A100-SXM4-40GB", "compute_capability": (8, 0)}], False),
        ([{"device_name": "NVIDIA L4", "compute_capability": (8, 9)}], False),
        ([], False),
    ],
)
def test_bfloat16_on_a_gpu_without_it_warns(details, warned):
    warning = accelerator.slow_bfloat16_gpus(details)
    assert (warning is not None) is warned
    if warned:
        assert warning.startswith("--mixed_precision: Tesla T4 (compute capability 7.5)")


TF_ERRORS = sorted(
    (c for c in vars(tf.errors).values()
     if isinstance(c, type) and issubclass(c, tf.errors.OpError) and c is not tf.errors.OpError),
    key=lambda c: c.__name__,
)  # fmt: skip


@pytest.mark.parametrize("error", TF_ERRORS, ids=lambda c: c.__name__)
def test_any_tensorflow_error_while_connecting_is_one_sentence_and_auto_falls_back(
    error, monkeypatch, capsys
):
    from tpu_bo.device import tpu_env

    def initialize(resolver):
        raise error(None, None, "TPU already in use by another process. Details\nand more")

    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", lambda tpu: tpu)
    monkeypatch.setattr(tf.config, "experimental_connect_to_cluster", lambda resolver: None)
    monkeypatch.setattr(tf.tpu.experimental, "initialize_tpu_system", initialize)
    monkeypatch.setattr(tpu_env, "tpu_evidence", lambda: "/dev/vfio/0")  # a TPU may be here
    monkeypatch.setattr(accelerator, "_NO_TPU", {})
    with pytest.raises(accelerator.NoAcceleratorError) as info:
        accelerator.get_strategy("tpu")
    assert info.value.reason == "TPU already in use by another process"
    assert "\n" not in info.value.for_cli() and info.value.reason in info.value.message
    assert accelerator.get_strategy("auto").num_replicas_in_sync == 1
    out = capsys.readouterr().out
    assert "accelerator=auto: no TPU (TPU already in use by another process) and no GPU" in out
