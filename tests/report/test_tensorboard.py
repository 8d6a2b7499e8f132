"""TensorBoard events: the HParams config at the root, a run per trial with its epochs."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.plugins.hparams import plugin_data_pb2

from tpu_bo.report.tensorboard import METRICS, TensorBoardLog
from tpu_bo.search.space import SearchSpace

SPACE = SearchSpace.from_value(
    {
        "learning_rate": ("log", 1e-4, 1e-2),
        "dropout": ("float", 0.0, 0.5),
        "units": ("int", 8, 64),
        "optimizer": ("choice", ["adam", "sgd"]),
    }
)


def events(directory):
    """(tag, plugin, value or hparams plugin data, step) of every summary in ``directory``."""
    out = []
    for path in sorted(tf.io.gfile.glob(f"{directory}/events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for v in event.summary.value:
                plugin = v.metadata.plugin_data.plugin_name
                if plugin == "hparams":
                    data = plugin_data_pb2.HParamsPluginData.FromString(
                        v.metadata.plugin_data.content
                    )
                    out.append((v.tag, plugin, data, event.step))
                else:
                    out.append((v.tag, plugin, float(tf.make_ndarray(v.tensor)), event.step))
    return out


def test_the_root_holds_every_param_with_its_domain_and_the_metrics(tmp_path):
    TensorBoardLog(str(tmp_path), SPACE)
    ((_, plugin, data, _),) = events(tmp_path / "tensorboard")
    assert plugin == "hparams"
    info = {h.name: h for h in data.experiment.hparam_infos}
    assert list(info) == ["learning_rate", "dropout", "units", "optimizer"]
    assert (
        info["learning_rate"].domain_interval.min_value,
        info["learning_rate"].domain_interval.max_value,
    ) == (1e-4, 1e-2)
    assert info["units"].domain_interval.max_value == 64
    assert [v.string_value for v in info["optimizer"].domain_discrete.values] == ["adam", "sgd"]
    assert [m.name.tag for m in data.experiment.metric_infos] == list(METRICS)


def test_a_trial_records_its_params_and_each_epochs_metrics(tmp_path):
    log = TensorBoardLog(str(tmp_path), SPACE)
    params = {"learning_rate": 1e-3, "dropout": np.float32(0.25), "units": np.int64(16)}
    log.start_trial(7, {**params, "optimizer": "sgd", "not_searched": 1})
    for epoch, accuracy in ((1, 0.5), (2, 0.75)):
        log.epoch(7, {"epoch": epoch, "loss": 1.0 / epoch, "val_accuracy": accuracy, "other": 3})
    log.epoch(8, {"epoch": 1, "loss": 9.0})  # no run open for trial 8: ignored
    log.close()
    run = events(tmp_path / "tensorboard" / "trial_0007")
    (session,) = [data for _, plugin, data, _ in run if plugin == "hparams"]
    assert session.session_start_info.group_name == "trial_0007"
    values = session.session_start_info.hparams
    assert set(values) == {"learning_rate", "dropout", "units", "optimizer"}
    assert values["units"].number_value == 16 and values["optimizer"].string_value == "sgd"
    assert values["dropout"].number_value == pytest.approx(0.25)
    scalars = sorted((tag, step, v) for tag, plugin, v, step in run if plugin != "hparams")
    assert scalars == [
        ("loss", 1, 1.0),
        ("loss", 2, 0.5),
        ("val_accuracy", 1, 0.5),
        ("val_accuracy", 2, 0.75),
    ]
    assert not (tmp_path / "tensorboard" / "trial_0008").exists()


def test_several_trials_run_at_once_and_close_one_by_one(tmp_path):
    log = TensorBoardLog(str(tmp_path), SPACE)
    log.start_trial(1, {"units": 8})
    log.start_trial(2, {"units": 9})
    log.close(1)
    log.epoch(1, {"epoch": 1, "loss": 1.0})  # closed: nothing more is written
    log.epoch(2, {"epoch": 1, "loss": 2.0})
    log.close()
    log.close()  # closing twice is harmless
    assert [
        t for t, p, _, _ in events(tmp_path / "tensorboard" / "trial_0001") if p != "hparams"
    ] == []
    assert [
        (t, v) for t, p, v, _ in events(tmp_path / "tensorboard" / "trial_0002") if p != "hparams"
    ] == [("loss", 2.0)]


def test_a_process_that_does_not_write_writes_nothing(tmp_path):
    log = TensorBoardLog(str(tmp_path), SPACE, writer=False)
    log.start_trial(0, {"units": 8})
    log.epoch(0, {"epoch": 1, "loss": 1.0})
    log.close()
    assert list(tmp_path.iterdir()) == []
