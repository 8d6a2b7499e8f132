"""Many workers of one study on a real PostgreSQL server (the session's throw-away one).

Workers are real ``python -m tpu_bo.main`` processes on the digits study. Two runs share the
suite's minutes: three workers through a server restart (then a different space and budget
refused, in-process, against the same study), and a worker SIGKILLed mid-trial.
"""

from __future__ import annotations

import json
import os
import signal
import time

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import start_cli
from tpu_bo.config import Config
from tpu_bo.errors import ConfigError
from tpu_bo.study.study import Study


def worker_flags(url: str, name: str, output_dir: str, **extra: object) -> list[str]:
    flags = {
        "dataset": "digits",
        "accelerator": "cpu",
        "batch_size": 8,
        "parallel_trials": 1,
        "epochs": 4,
        "init_points": 4,
        "n_iter": 5,
        "output_dir": output_dir,
        "storage": url,
        "study_name": name,
        "heartbeat_interval": 1,
        "grace_period": 12,
        "storage_patience": 120,
        **extra,
    }
    return [f"--{k}={v}" for k, v in flags.items()]


def trials_of(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def wait_until(condition, timeout: float, procs) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (KeyError, optuna.exceptions.OptunaError, ValueError):
            pass  # the study is not created yet
        dead = [p for p in procs if p.poll() is not None]
        assert not dead, dead[0].communicate()[1][-3000:]
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout} s")


def test_three_workers_share_a_study_through_a_database_restart(postgres, tmp_path):
    name, out = "three", str(tmp_path / "study")
    procs = [start_cli(*worker_flags(postgres.url, name, out)) for _ in range(3)]
    try:
        done = lambda: sum(t.state.is_finished() for t in trials_of(postgres.url, name)) >= 2  # noqa: E731
        wait_until(done, 300, procs)
        postgres.stop(remove=False)  # mid-study: every worker's next call fails
        time.sleep(4)
        postgres.start()
        outputs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, stderr) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, stderr[-3000:]
        assert "Traceback" not in stderr, stderr[-3000:]
    stderr = "".join(err for _, err in outputs)
    assert "is unreachable" in stderr and "is back after" in stderr
    trials = trials_of(postgres.url, name)
    assert sorted(t.number for t in trials) == list(range(9))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    # Each ran once: no trial was taken over (no worker died), none dropped as run twice.
    assert not any(t.user_attrs.get("takeovers") for t in trials)
    assert "dropped" not in stderr + "".join(out for out, _ in outputs)
    assert len({t.user_attrs["worker"] for t in trials}) >= 2, "the workers did not share"
    summary = json.loads((tmp_path / "study" / "summary.json").read_text())
    assert summary["counts"]["ok"] == 9

    # A worker whose flags define another study is refused, naming the first difference.
    base = {"storage": postgres.url, "study_name": name, "output_dir": out, "dataset": "digits"}
    # optimizer: as the workers' trainer settled it for this uncompiled model.
    base.update(batch_size=8, epochs=4, init_points=4, n_iter=5, optimizer="rmsprop")
    other = Config(**base, space={"learning_rate": ("log", 1e-3, 1e-1)}).validate()
    with pytest.raises(ConfigError) as e:
        Study(other).open()
    assert e.value.flag == "param" and "'three'" in e.value.message
    with pytest.raises(ConfigError) as e:
        Study(Config(**{**base, "init_points": 3}).validate()).open()
    assert e.value.flag == "init_points"
    # A bigger --n_iter extends the study for every worker, as a rerun extends one.
    study = Study(Config(**{**base, "n_iter": 6}).validate()).open()
    assert study.remaining == 1
    study.close()


def test_a_killed_workers_trial_is_taken_over_from_its_checkpoint(postgres, tmp_path):
    name, out = "killed", str(tmp_path / "study")
    flags = worker_flags(
        postgres.url, name, out, epochs=10, init_points=2, n_iter=1, grace_period=3
    )
    victim, survivor = start_cli(*flags), start_cli(*flags)
    procs = [victim, survivor]
    mark = f":{victim.pid}:"

    def victim_checkpointed() -> bool:
        for t in trials_of(postgres.url, name):
            mine = mark in t.user_attrs.get("worker", "")
            path = os.path.join(out, t.user_attrs.get("checkpoint", "-"))
            if mine and t.state == TrialState.RUNNING and len(t.intermediate_values) >= 2:
                return os.path.exists(path)
        return False

    try:
        wait_until(victim_checkpointed, 300, procs)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        procs = [survivor]
        stdout, stderr = survivor.communicate(timeout=600)
    finally:
        victim.kill()
        survivor.kill()
    assert survivor.returncode == 0, stderr[-3000:]
    trials = trials_of(postgres.url, name)
    assert sorted(t.number for t in trials) == [0, 1, 2]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    taken = [t for t in trials if t.user_attrs.get("takeovers")]
    assert len(taken) == 1, [t.user_attrs for t in trials]
    (takeover,) = taken[0].user_attrs["takeovers"]
    assert mark in takeover["from"] and takeover["epoch"] >= 1
    assert taken[0].user_attrs["resumed_from_epoch"] == takeover["epoch"]
    assert len(taken[0].user_attrs["history"]) == 10
    summary = json.loads((tmp_path / "study" / "summary.json").read_text())
    assert summary["counts"]["ok"] == 3 and summary["selection"]["selected_trial"] is not None
    assert f"taking over trial {taken[0].number}" in stderr + stdout
    assert "continuing after epoch" in stderr + stdout
