"""The private Keras names tpu_bo relies on (tpu_bo.train.keras_names), and what they record."""

from __future__ import annotations

import pathlib

import keras
import pytest

from tests.custom_models import tiny
from tpu_bo.train import keras_names
from tpu_bo.train.reset import recording

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_this_keras_has_every_name_and_the_tpu_set_pins_the_verified_version():
    assert keras_names.missing() == []
    assert f"keras=={keras_names.VERIFIED}\n" in (ROOT / "requirements-tpu.txt").read_text()


def test_a_keras_without_a_name_fails_at_start_in_one_sentence(monkeypatch):
    # As a rename would leave it (keras.Variable inherits it from the backend's Variable).
    monkeypatch.setattr(keras.Variable, "_initialize_with_initializer", None, raising=False)
    monkeypatch.setattr(keras_names, "_CHECKED", [])
    with pytest.raises(keras_names.KerasChanged) as info:
        keras_names.check()
    message = str(info.value)
    assert message.startswith(f"Keras {keras.__version__} has no keras.Variable._initialize")
    assert f"keras=={keras_names.VERIFIED}" in message and "\n" not in message
    with pytest.raises(keras_names.KerasChanged), recording():  # never records nothing
        pass


def test_recording_notes_the_initializer_of_every_variable_a_builder_makes():
    with recording() as made:
        model = tiny({"dropout": 0.1}, (8, 8), 10)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert len(dense) == 2
    for layer in dense:
        for variable, initializer in ((layer.kernel, layer.kernel_initializer),
                                      (layer.bias, layer.bias_initializer)):  # fmt: skip
            assert made[id(variable)].variable is variable
            assert type(made[id(variable)].initializer) is type(initializer)
            assert made[id(variable)].drawn is not None
    assert {id(v) for v in model.variables} <= made.keys()  # the dropout RNG state too
