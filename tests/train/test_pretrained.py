"""Pretrained weights: a variable the builder assigned after creating it keeps that value.

One small regression study (``study``): a frozen, "pretrained" projection ``W`` (set with
``set_weights`` after the layer is built) under a trainable head, with two slots, a resume and
a final model. The target is linear in ``x @ W``, so a head on a redrawn projection cannot fit
it; that makes the scores, not just the weights, show whether the backbone was kept.
"""

from __future__ import annotations

import contextlib
import io

import keras
import numpy as np
import pytest

from tpu_bo import load_best_model, run_study

RNG = np.random.default_rng(0)
W = RNG.normal(size=(8, 4)).astype(np.float32)
X = RNG.normal(size=(640, 8)).astype(np.float32)
Y = (X @ W).sum(axis=1)
Y = (Y / Y.std()).astype(np.float32)
RATE = 0.02


def pretrained(hp, input_shape, num_classes):
    """A frozen projection holding ``W`` (as a loaded backbone would) and a trainable head."""
    backbone = keras.layers.Dense(4, use_bias=False, trainable=False, name="backbone")
    model = keras.Sequential([keras.Input(input_shape), backbone, keras.layers.Dense(1)])
    backbone.set_weights([W])
    model.compile(optimizer=keras.optimizers.RMSprop(RATE), loss="mse", metrics=["mae"])
    return model


FIELDS = {
    "model": pretrained,
    "objective": "val_mae",
    "space": {"learning_rate": ("log", RATE, RATE * 1.01)},
    "epochs": 4,
    "batch_size": 32,
    "parallel_trials": 2,
    "init_points": 2,
}


def run(**fields):
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        result = run_study(data=(X[:512], Y[:512]), validation_data=(X[512:], Y[512:]),
                           **{**FIELDS, **fields})  # fmt: skip
    return result


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """(output_dir, first session, resumed session with one more trial)."""
    out = str(tmp_path_factory.mktemp("pretrained"))
    first = run(n_iter=1, output_dir=out)
    resumed = run(n_iter=2, final_epochs=2, output_dir=out)
    return out, first, resumed


def best_mae(trial) -> float:
    return min(h["val_mae"] for h in trial.history)


def backbone(model) -> np.ndarray:
    return model.get_layer("backbone").get_weights()[0]


def test_every_slot_starts_from_the_built_backbone_and_a_seeded_head(caplog):
    import logging

    from tpu_bo.config import Config
    from tpu_bo.data.pipeline import load_datasets
    from tpu_bo.data.sources import python_study
    from tpu_bo.device.accelerator import get_strategy
    from tpu_bo.train.trainer import Trainer

    config, splits = python_study(Config(**{**FIELDS, "n_iter": 1}), (X, Y), (X, Y), None)
    config = config.validate()
    strategy = get_strategy("cpu")
    datasets = load_datasets(config, strategy, data=splits)
    trainer = Trainer(config, strategy, datasets)
    point = {"learning_rate": RATE}
    with caplog.at_level(logging.INFO, logger="tpu_bo"):
        pack = trainer.pack(point)
    assert "1 of 3 variables keep the values the builder gave them" in caplog.text
    pack.load(0, point, seed=1)
    pack.load(1, point, seed=2)
    towers = pack.program.towers
    for tower in towers:
        np.testing.assert_array_equal(backbone(tower.model), W)
    heads = [t.model.layers[-1].get_weights()[0] for t in towers]
    assert not np.array_equal(heads[0], heads[1])  # the head is drawn from each trial's seed
    pack.run_epoch()
    pack.stop(0)
    pack.load(0, point, seed=1)  # a refilled slot starts from the built values again
    np.testing.assert_array_equal(backbone(towers[0].model), W)


def test_the_backbone_is_kept_in_the_best_model_after_a_resume_and_in_the_final_model(study):
    out, first, resumed = study
    assert len(first.trials) == 3 and len(resumed.trials) == 4
    np.testing.assert_array_equal(backbone(load_best_model(out, builder=pretrained)), W)
    final = keras.models.load_model(f"{out}/final/model.keras")
    np.testing.assert_array_equal(backbone(final), W)
    assert resumed.final["status"] == "ok"


def test_a_kept_backbone_scores_what_keras_fit_of_the_built_model_scores(tmp_path):
    """As built (the head too), a trial trains as Keras's ``fit`` of the same model does; with
    every variable redrawn from the seed, the projection is lost and the head cannot fit."""
    keras.utils.set_random_seed(0)
    model = pretrained(None, (8,), None)
    fitted = model.fit(X[:512], Y[:512], batch_size=32, epochs=6, verbose=0,
                       validation_data=(X[512:], Y[512:]))  # fmt: skip
    keras_mae = fitted.history["val_mae"][-1]
    scores = {}
    for mode in ("as_built", "seeded"):
        result = run(initial_weights=mode, epochs=6, parallel_trials=1, init_points=1, n_iter=1,
                     output_dir=str(tmp_path / mode))  # fmt: skip
        scores[mode] = [best_mae(t) for t in result.trials]
    assert keras_mae < 0.1 and max(scores["as_built"]) < 0.1, (keras_mae, scores)
    assert min(scores["seeded"]) > 0.3, scores
