"""KerasTuner's API on tpu_bo's engine: change one import, keep the rest of the code.

    import tpu_bo.keras_tuner as kt   # instead of: import keras_tuner as kt

    def build_model(hp):
        model = keras.Sequential([...hp.Int("units", 32, 512, step=32)...])
        model.compile(optimizer=keras.optimizers.Adam(hp.Float("lr", 1e-4, 1e-2, sampling="log")),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    tuner = kt.BayesianOptimization(build_model, objective="val_accuracy", max_trials=10,
                                    directory="my_dir", project_name="helloworld")
    tuner.search(x_train, y_train, epochs=2, validation_data=(x_val, y_val))
    best_model = tuner.get_best_models(num_models=2)[0]

``HyperParameters`` (:mod:`tpu_bo.keras_tuner.hyperparameters`) reproduces KerasTuner 1.4.8's
define-by-run container; the tuners (:mod:`tpu_bo.keras_tuner.tuners`) find the space by
building the function (:mod:`tpu_bo.keras_tuner.space`) and run one :func:`tpu_bo.run_study`
in ``directory/project_name``. What maps to what, and what is refused: docs/keras_tuner.md.
Importing this package imports neither TensorFlow nor ``keras_tuner``.
"""

from tpu_bo._lazy import exports

__all__ = [
    "BayesianOptimization",
    "HyperModel",
    "HyperParameters",
    "Hyperband",
    "Objective",
    "Oracle",
    "RandomSearch",
    "Trial",
    "Tuner",
]
__getattr__, __dir__ = exports(
    __name__,
    {
        "BayesianOptimization": "tuners",
        "HyperModel": "tuners",
        "HyperParameters": "hyperparameters",
        "Hyperband": "tuners",
        "Objective": "tuners",
        "Oracle": "tuners",
        "RandomSearch": "tuners",
        "Trial": "tuners",
        "Tuner": "tuners",
    },
)
