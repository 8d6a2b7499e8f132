"""Population-based training inside one program (``--scheduler=pbt``), run for real.

* the exploit copies the donor's weights and optimizer state exactly, on every replica, in one
  traced program that is never traced again;
* explore never leaves the space;
* a PBT study journals each member's schedule, and its best member's ancestry reaches
  ``summary.json``, ``summary.png``, TensorBoard and ``load_best_model``;
* with exploit off (``--pbt_quantile=0``) a PBT study is exactly a plain packed study;
* the CLI with two CPU replicas, killed mid-population, continues it (tests/test_main.py has
  the other SIGKILL tests; this one is PBT's).
"""

from __future__ import annotations

import json
import signal
import time

import numpy as np
import pytest

from tests.conftest import run_cli, start_cli
from tests.test_main import checkpoint, journal
from tests.train.test_trainer import make_trainer
from tpu_bo import run_study
from tpu_bo.config import Config
from tpu_bo.errors import ConfigError
from tpu_bo.search.space import SearchSpace
from tpu_bo.session.pbt import ancestry, cut, explore, per_epoch
from tpu_bo.train.reset import RNG_STATE
from tpu_bo.train.reset import copied_variables as moved

TINY = {
    "model": "tests.custom_models:tiny",
    "space": ["dropout:float:0:0.5", "learning_rate:log:1e-4:1e-1"],
    "optimizer": "adam",
}
POINTS = [{"dropout": 0.1 * k, "learning_rate": 10.0 ** -(k + 1)} for k in range(4)]
STUDY = {
    "dataset": "digits",
    "model": "mlp",
    "space": [
        "learning_rate:log:1e-4:1e-1",
        "dropout:float:0.0:0.5",
        "label_smoothing:float:0.0:0.2",
    ],
    "batch_size": 64,
    "epochs": 4,
    "init_points": 4,
    "n_iter": 4,
    "parallel_trials": 4,
    "accelerator": "cpu",
}


def components(variable):
    """Each replica's copy of a Keras variable (one under the default strategy)."""
    value = variable.value
    return [np.array(v.numpy()) for v in getattr(value, "values", [value])]


def test_exploit_copies_weights_and_optimizer_state_exactly_in_one_traced_program():
    """On two replicas (the default strategy's copy is the smoke check's, tests/test_smoke.py)."""
    trainer = make_trainer(2, **TINY, epochs=4)
    pack = trainer.pack(POINTS[0], 4)
    for k, point in enumerate(POINTS):
        pack.load(k, point, seed=10 + k)
    pack.run_epoch()
    towers = pack.program.towers
    rng_before = [components(v) for v in towers[0].model.variables if v.name == RNG_STATE]
    assert any(not np.array_equal(a, b) for a, b in zip(
        components(moved(towers[0])[0]), components(moved(towers[2])[0]), strict=True))  # fmt: skip
    pack.exploit({0: 2, 3: 1})
    for receiver, donor in ((0, 2), (3, 1)):
        for a, b in zip(moved(towers[receiver]), moved(towers[donor]), strict=True):
            for x, y in zip(components(a), components(b), strict=True):
                assert np.array_equal(x, y), a.path
    rng_after = [components(v) for v in towers[0].model.variables if v.name == RNG_STATE]
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(rng_before, rng_after, strict=True))
    pack.set_runtime(0, {"dropout": 0.25, "learning_rate": 0.02})
    assert towers[0].runtime_vars["learning_rate"].numpy() == np.float32(0.02)
    assert towers[0].runtime_vars["dropout"].numpy() == np.float32(0.25)
    pack.run_epoch()
    pack.exploit({1: 0})  # another pairing: the same program
    assert all(np.array_equal(components(a)[0], components(b)[0])
               for a, b in zip(moved(towers[1]), moved(towers[0]), strict=True))  # fmt: skip
    assert trainer.copy_traces == 1 and trainer.traces == 2
    with pytest.raises(ValueError, match="distinct running receivers and donors"):
        pack.exploit({0: 0})


def test_explore_never_leaves_the_space_and_moves_by_the_factors():
    space = SearchSpace.parse(
        [
            "lr:log:1e-4:1e-1",
            "p:float:0.0:0.5",
            "n:int:1:8:runtime",
            "s:choice:0.0,0.1,0.2",
        ]
    )
    rng = np.random.default_rng(0)
    for resample in (0.0, 0.3, 1.0):
        for _ in range(500):
            low = {"lr": 1e-4, "p": 0.0, "n": 1, "s": 0.0}
            start = explore(low, space.params, rng, 1.0)  # a fresh draw of each
            edge = {"lr": 1e-1, "p": 0.5, "n": 8, "s": 0.2}
            for values in (start, edge, low):
                out = explore(values, space.params, rng, resample)
                assert space.contains(out), out
    out = explore({"lr": 1e-3, "p": 0.2, "n": 4, "s": 0.1}, space.params, rng, 0.0)
    assert out["lr"] in (pytest.approx(8e-4), pytest.approx(1.25e-3))
    assert out["p"] in (pytest.approx(0.16), pytest.approx(0.25))
    assert out["n"] in (3, 5) and out["s"] in (0.0, 0.2)
    assert [cut(n, 0.25) for n in (1, 2, 4, 7, 8, 16)] == [0, 1, 1, 1, 2, 4]
    assert cut(8, 0.0) == 0 and cut(8, 0.5) == 4


def test_ancestry_follows_each_exploit_back_to_its_donor():
    schedules = {
        0: [{"after_epoch": 0, "values": {"a": 1}, "from": None}],
        1: [
            {"after_epoch": 0, "values": {"a": 2}, "from": None},
            {"after_epoch": 2, "values": {"a": 3}, "from": 0},
        ],
        2: [
            {"after_epoch": 0, "values": {"a": 4}, "from": None},
            {"after_epoch": 4, "values": {"a": 5}, "from": 1},
        ],
    }
    segments = ancestry(2, schedules, 6)
    assert [(s["trial"], s["epochs"], s["values"]["a"]) for s in segments] == [
        (0, [1, 2], 1),
        (1, [3, 4], 3),
        (2, [5, 6], 5),
    ]
    assert [r["a"] for r in per_epoch(segments)] == [1, 1, 3, 3, 5, 5]
    assert ancestry(2, schedules, 3) == [{"trial": 2, "epochs": [1, 3], "values": {"a": 4}}]


@pytest.mark.parametrize(
    ("fields", "flag", "needle"),
    [
        ({"parallel_trials": 1}, "parallel_trials", "needs a population of at least 4"),
        ({"prune": "asha"}, "prune", "PBT replaces pruning"),
        ({"repeat_best": 2}, "repeat_best", "does not go with --scheduler=pbt"),
        ({"final_epochs": 2}, "final_epochs", "would not follow its schedule"),
        ({"pbt_interval": 4}, "pbt_interval", "must be below --epochs=4"),
        ({"pbt_quantile": 0.6}, "pbt_quantile", "must lie in [0, 0.5]"),
        ({"pbt_resample": -0.1}, "pbt_resample", "must lie in [0, 1.0]"),
    ],
)
def test_pbt_settings_that_cannot_work_are_one_sentence(fields, flag, needle):
    with pytest.raises(ConfigError) as caught:
        Config(**{**STUDY, "scheduler": "pbt", **fields}).validate()
    assert caught.value.flag == flag and needle in str(caught.value)


@pytest.fixture(scope="module")
def pbt_study(tmp_path_factory):
    """One PBT study of two populations of 4 on digits, exploiting after epochs 1, 2 and 3."""
    out = tmp_path_factory.mktemp("pbt")
    result = run_study(**STUDY, scheduler="pbt", pbt_interval=1, output_dir=str(out))
    return result, out


def test_a_pbt_study_journals_each_members_schedule(pbt_study):
    result, out = pbt_study
    space = SearchSpace.parse(STUDY["space"])
    records = sorted(result.trials, key=lambda r: r.number)
    assert [r.status.value for r in records] == ["ok"] * 8
    for r in records:
        first, *exploits = r.schedule
        assert first == {"after_epoch": 0, "values": r.params, "from": None}
        population = range(r.number // 4 * 4, r.number // 4 * 4 + 4)
        for entry in exploits:
            assert entry["after_epoch"] in (1, 2, 3) and entry["from"] in population
            assert entry["from"] != r.number and space.contains(entry["values"])
        assert [h["epoch"] for h in r.history] == [1, 2, 3, 4]
    # One in four members copies after each of epochs 1-3, in each population.
    for population in (records[:4], records[4:]):
        epochs = sorted(e["after_epoch"] for r in population for e in r.schedule[1:])
        assert epochs == [1, 2, 3]
    summary = json.loads((out / "summary.json").read_text())["pbt"]
    assert summary["exploits"] == 6 and summary["copy_traces"] == 1
    assert result.traces == 2 and {r.traces for r in records} == {2}


def test_the_best_members_ancestry_reaches_every_output(pbt_study):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tpu_bo.data.sources import digits_source
    from tpu_bo.results import load_best_model

    result, out = pbt_study
    best = json.loads((out / "summary.json").read_text())["pbt"]["best"]
    record = next(r for r in result.trials if r.number == result.best_trial)
    assert best["trial"] == record.number and best["best_epoch"] == record.best_epoch
    spans = [s["epochs"] for s in best["ancestry"]]
    assert spans[0][0] == 1 and spans[-1][1] == record.best_epoch
    assert all(a[1] + 1 == b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert best["ancestry"][-1]["trial"] == record.number
    assert [row["epoch"] for row in best["schedule"]] == list(range(1, record.best_epoch + 1))
    assert (out / "summary.png").stat().st_size > 10_000
    events = EventAccumulator(str(out / "tensorboard" / "pbt_best")).Reload()
    steps = [e.step for e in events.Tensors("pbt/learning_rate")]
    assert steps == list(range(1, record.best_epoch + 1))
    # load_best_model: the best member's weights score its target on the eval split.
    dataset, n = digits_source().load(Config().eval_split, "eval_split")
    images, labels = next(iter(dataset.batch(n)))
    logits = load_best_model(str(out))(np.asarray(images, np.float32) / 255.0, training=False)
    accuracy = float(np.mean(np.argmax(logits, -1) == labels.numpy()))
    assert accuracy == pytest.approx(result.best_target, abs=1e-6)


def test_pbt_with_exploit_off_is_exactly_a_plain_packed_study(tmp_path):
    common = {**STUDY, "epochs": 2, "n_iter": 2}
    off = run_study(**common, scheduler="pbt", pbt_interval=1, pbt_quantile=0.0,
                    output_dir=str(tmp_path / "pbt"))  # fmt: skip
    plain = run_study(**common, output_dir=str(tmp_path / "fifo"))
    a = sorted(off.trials, key=lambda r: r.number)
    b = sorted(plain.trials, key=lambda r: r.number)
    assert [r.params for r in a] == [r.params for r in b]
    assert [r.seed for r in a] == [r.seed for r in b]
    for x, y in zip(a, b, strict=True):
        drop = ("steps_per_second",)
        assert [{k: v for k, v in h.items() if k not in drop} for h in x.history] == [
            {k: v for k, v in h.items() if k not in drop} for h in y.history
        ]
        assert len(x.schedule) == 1 and not y.schedule


def test_a_killed_pbt_study_continues_its_population_on_two_replicas(tmp_path):
    """The CLI, two CPU replicas: killed once an exploit is journaled and every member saved
    the epoch after it; the rerun continues the population and every schedule stays whole."""
    args = [
        "--scheduler=pbt", "--parallel_trials=4", "--pbt_interval=1", "--cpu_replicas=2",
        "--accelerator=cpu", "--model=mlp", "--epochs=4", "--init_points=4", "--n_iter=1",
        "--batch_size=32", f"--output_dir={tmp_path}",
        "--param=learning_rate:log:1e-4:1e-1", "--param=dropout:float:0.0:0.5",
    ]  # fmt: skip
    proc = start_cli(*args)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        saved = [checkpoint(tmp_path, n) for n in range(4)]
        if all(s is not None and s.epoch >= 2 for s in saved):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the study ended before it could be killed"
    assert "PBT after epoch 1" in out
    saved = {n: checkpoint(tmp_path, n) for n in range(4)}
    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    for n, state in saved.items():
        assert f"continuing trial {n} after epoch {state.epoch}" in rerun.stdout
    records = journal(tmp_path)
    assert [r.status.value for r in records] == ["ok"] * 5
    for r in records[:4]:
        assert r.resumed_from_epoch == saved[r.number].epoch
        assert [h["epoch"] for h in r.history] == [1, 2, 3, 4]
        assert [e["after_epoch"] for e in r.schedule] == sorted(
            {e["after_epoch"] for e in r.schedule}
        )
    # At least one copy after each of epochs 1-3 (more only where members stood apart).
    copies = [e["after_epoch"] for r in records[:4] for e in r.schedule[1:]]
    assert set(copies) == {1, 2, 3} and len(copies) <= 6
    assert "MirroredStrategy with 2 replicas" in rerun.stdout  # the accelerator line


def test_a_structural_parameter_runs_one_population_per_structure(tmp_path):
    result = run_study(
        **{
            **STUDY,
            **TINY,
            "epochs": 3,
            "init_points": 6,
            "n_iter": 6,
            "space": [*TINY["space"], "width:choice:8,16"],
        },
        scheduler="pbt",
        pbt_interval=1,
        output_dir=str(tmp_path),
    )
    records = {r.number: r for r in result.trials}
    assert len(records) == 12 and all(r.status.value == "ok" for r in records.values())
    for r in records.values():
        for entry in r.schedule[1:]:  # a donor always has the receiver's structure
            assert records[entry["from"]].params["width"] == r.params["width"]
            assert "width" not in entry["values"]
    widths = {r.params["width"] for r in records.values()}
    assert widths == {8, 16}, widths  # seed 0 draws both
    summary = json.loads((tmp_path / "summary.json").read_text())["pbt"]
    # One train, one eval and one copy program per structure.
    assert result.traces == 2 * len(widths) and summary["copy_traces"] == len(widths)
    assert summary["exploits"] >= 2 * 3
