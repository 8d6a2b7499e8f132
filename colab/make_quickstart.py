"""Writes colab/quickstart.ipynb from the cells below (edit here, then run this file).

  python colab/make_quickstart.py

Keeping the cells in a Python file makes the notebook reviewable in a diff; the test
``tests/test_notebook.py`` checks that the .ipynb matches this file and executes it.
"""

from __future__ import annotations

import importlib.util
import pathlib

import nbformat

MD, CODE = "markdown", "code"

CELLS: list[tuple[str, str, list[str]]] = [
    (
        MD,
        """\
# tpu_bo quickstart: the blog post's MNIST study, compiled once

This notebook tunes the blog post's CNN on MNIST with Bayesian optimization: the dropout rate
`dropout_2`, the learning rate (log scale) and the dense width (128, 256 or 384). Unlike the
usual recipe it does not rebuild and recompile the model per trial: runtime hyperparameters
are variables, each dense width gets one compiled program, and on a TPU several trials train
side by side in one program.

It runs on Colab's **TPU** (Runtime → Change runtime type → v5e-1), a GPU, or a CPU, and
anywhere else Jupyter runs. The study lives on Google Drive, so when Colab recycles the
runtime, **run the notebook again from the top**: the trials are stored in an Optuna journal
on Drive, an interrupted trial continues from its last finished epoch, and only the missing
trials run.

Cells that only make sense on Colab (Drive, `%tensorboard`) check for Colab first.""",
        [],
    ),
    (
        CODE,
        """\
# Parameters (tagged "parameters": papermill and the test suite override them).
DATA_DIR = None  # TFDS data dir (local or gs://); None: TFDS's default, downloading MNIST once
OUTPUT_DIR = None  # None: Google Drive on Colab, else ./runs/quickstart
TRAIN_SPLIT = "train[:90%]"
EVAL_SPLIT = "train[90%:]"
EPOCHS = 1
INIT_POINTS = 10  # random starting points
N_ITER = 10  # guided trials
FINAL_EPOCHS = 3  # after the study: retrain the best configuration this long and export it
PARALLEL_TRIALS = None  # trials per compiled program; None: 4 on a TPU, else 1
SMOKE_CHECK = True  # run `python -m tpu_bo.smoke` first (a minute or two on a CPU)
SMOKE_SKIP = ""  # checks it skips: "cli" (its own 3-trial study), "throughput"
PBT = False  # section 9: also run a population-based-training study
PBT_MEMBERS = 8  # its population: the slots of one program (at least 4)
PBT_EPOCHS = 6
REPO_URL = "https://github.com/YOUR_ORG/tpu_bo.git"  # where your copy of tpu_bo lives""",
        ["parameters"],
    ),
    (
        MD,
        """\
## 1. Install

The cell detects the runtime. On a TPU it installs TensorFlow's TPU build
(`requirements-tpu.txt`: `tensorflow-tpu==2.20.0` with a pinned `libtpu`), on a GPU
`requirements-gpu.txt`, otherwise the CPU set, then tpu_bo itself. It never installs
`tensorflow` next to `tensorflow-tpu` (both provide the same module) and removes a stray one.
If tpu_bo is already importable (as in the test suite), it installs nothing.

**How long:** about 70 s for the CPU set on a 2-core machine (measured); the TPU and GPU
wheels are larger downloads, so expect a few minutes. Installing happens once per runtime.""",
        [],
    ),
    (
        CODE,
        """\
import importlib.metadata
import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys
import time

IN_COLAB = "google.colab" in sys.modules


def runtime_kind():
    if (
        os.path.exists("/dev/accel0")
        or os.path.exists("/dev/vfio/0")
        or os.environ.get("TPU_ACCELERATOR_TYPE")
    ):
        return "tpu"
    if shutil.which("nvidia-smi"):
        return "gpu"
    return "cpu"


def installed(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


RUNTIME = runtime_kind()
print(f"runtime: {RUNTIME}" + (" (Colab)" if IN_COLAB else ""))
if importlib.util.find_spec("tpu_bo") is None:
    started = time.time()
    source = next(
        (p for p in (pathlib.Path.cwd(), pathlib.Path.cwd().parent) if (p / "tpu_bo").is_dir()),
        None,
    )
    if source is None:
        source = pathlib.Path("tpu_bo_src")
        if not source.exists():
            subprocess.run(["git", "clone", "-q", REPO_URL, str(source)], check=True)
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    if RUNTIME == "tpu":
        stray = [n for n in ("tensorflow", "tensorflow-cpu") if installed(n)]
        if stray:  # they would shadow tensorflow-tpu's module
            subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", *stray], check=True)
    requirements = {"tpu": "requirements-tpu.txt", "gpu": "requirements-gpu.txt"}.get(
        RUNTIME, "requirements.txt"
    )
    subprocess.run([*pip, "-r", str(source / requirements), "-e", str(source)], check=True)
    sys.path.insert(0, str(source.resolve()))  # an editable install is seen at the next start
    print(f"installed {requirements} and tpu_bo in {time.time() - started:.0f} s")
else:
    print("tpu_bo is already installed; nothing to install")""",
        [],
    ),
    (
        MD,
        """\
## 2. Check the runtime

First the smoke check (`python -m tpu_bo.smoke`), in a child process before this notebook
touches the accelerator (a TPU serves one process at a time): versions, the TPU plugin
variables, devices, a pack of two trials against each trial alone, no retracing, the per-trial
reset, saved best weights, bfloat16, the speed of 1 against 4 trials per program, and a 3-trial
study. Paste its output into a bug report.

Then the strategy. On a TPU runtime it asks for the TPU and stops with an error if TensorFlow
cannot reach it, rather than quietly training on the CPU. `tpu_bo` is imported before
TensorFlow: it sets the TPU plugin's variables, which TensorFlow reads when it is imported.""",
        [],
    ),
    (
        CODE,
        """\
import tpu_bo  # first: TensorFlow reads the TPU plugin variables it sets when imported

print(tpu_bo.device.tpu_env.ensure_configured().describe())
if SMOKE_CHECK:  # before this kernel imports TensorFlow, which may claim the TPU
    check = ["-m", "tpu_bo.smoke", f"--accelerator={RUNTIME}", f"--skip={SMOKE_SKIP}"]
    smoke = subprocess.Popen(
        [sys.executable, *check],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for line in smoke.stdout:  # one line per check, as it ends
        if line.startswith(("tpu_bo smoke", "PASS", "FAIL", "INFO", "result")):
            print(line, end="")
    if smoke.wait():
        raise RuntimeError("the smoke check failed: see its FAIL lines above")""",
        [],
    ),
    (
        CODE,
        """\
import tensorflow as tf

from tpu_bo.device.accelerator import get_strategy

# On a TPU runtime, fail loudly rather than fall back to the CPU.
ACCELERATOR = "tpu" if RUNTIME == "tpu" else "auto"
strategy = get_strategy(ACCELERATOR)
ON_TPU = isinstance(strategy, tf.distribute.TPUStrategy)
print(
    f"TensorFlow {tf.__version__}: {type(strategy).__name__} with "
    f"{strategy.num_replicas_in_sync} replica(s)"
)
if PARALLEL_TRIALS is None:
    PARALLEL_TRIALS = 4 if ON_TPU else 1""",
        [],
    ),
    (
        MD,
        """\
## 3. Keep the study on Google Drive

On Colab the study goes to Drive, which outlives the runtime. Elsewhere it goes to a local
directory (or set `OUTPUT_DIR` to a `gs://` path on a TPU VM).""",
        [],
    ),
    (
        CODE,
        """\
if OUTPUT_DIR is None:
    if IN_COLAB:
        from google.colab import drive

        drive.mount("/content/drive")
        OUTPUT_DIR = "/content/drive/MyDrive/tpu_bo/quickstart"
    else:
        OUTPUT_DIR = os.path.join("runs", "quickstart")
print("study directory:", OUTPUT_DIR)""",
        [],
    ),
    (
        MD,
        """\
## 4. Run the study

The table grows one row per trial: its score (validation accuracy, best over its epochs; a
new best is starred), status, seconds, the number of programs traced so far, and the
hyperparameters. Re-running this cell, or the whole notebook after a recycled runtime, resumes
the study.""",
        [],
    ),
    (
        CODE,
        """\
result = tpu_bo.run_study(
    accelerator=ACCELERATOR,
    dataset="mnist",
    data_dir=DATA_DIR,
    train_split=TRAIN_SPLIT,
    eval_split=EVAL_SPLIT,
    model="mnist_cnn",
    epochs=EPOCHS,
    space={
        "dropout_2": ("float", 0.1, 0.5),
        "learning_rate": ("log", 1e-4, 1e-2),
        "dense_units": ("choice", [128, 256, 384]),
    },
    init_points=INIT_POINTS,
    n_iter=N_ITER,
    parallel_trials=PARALLEL_TRIALS,
    mixed_precision=ON_TPU,  # bfloat16, the TPU's native type
    final_epochs=FINAL_EPOCHS,  # then retrain the best configuration and export it
    output_dir=OUTPUT_DIR,
)""",
        [],
    ),
    (
        MD,
        """\
## 5. Results

The best trial, its test-split score (computed once), and `summary.png`: the best score so
far against the trial number, and the score against each hyperparameter (log axis for the
learning rate).""",
        [],
    ),
    (
        CODE,
        """\
from IPython.display import Image, display

print("best trial:", result.best_trial, "val_accuracy:", round(result.best_target, 4))
print("best hyperparameters:", result.best_params)
print("test:", result.test_metrics)
print("trials by status:", result.counts, "| programs traced this session:", result.traces)
with tf.io.gfile.GFile(os.path.join(OUTPUT_DIR, "summary.png"), "rb") as f:
    display(Image(data=f.read()))""",
        [],
    ),
    (
        MD,
        """\
## 6. TensorBoard

Per-epoch curves of every trial and the HParams dashboard, which compares trials.""",
        [],
    ),
    (
        CODE,
        """\
if IN_COLAB:
    ipython = get_ipython()  # noqa: F821 - defined inside IPython
    ipython.run_line_magic("load_ext", "tensorboard")
    ipython.run_line_magic("tensorboard", f"--logdir {OUTPUT_DIR}/tensorboard")
else:
    print(f"run: tensorboard --logdir {OUTPUT_DIR}/tensorboard")""",
        [],
    ),
    (
        MD,
        """\
## 7. Load the best model

`load_best_model` builds a fresh Keras model of the best trial's structure and loads its
weights from its best epoch. Here it is scored again on the test split, next to the study's
own test score.""",
        [],
    ),
    (
        CODE,
        """\
import numpy as np
import tensorflow_datasets as tfds

model = tpu_bo.load_best_model(OUTPUT_DIR)
test = tfds.load("mnist", split="test", data_dir=DATA_DIR, batch_size=-1, as_supervised=True)
images, labels = tfds.as_numpy(test)
logits = model.predict(images.astype(np.float32) / 255.0, batch_size=500, verbose=0)
accuracy = float((logits.argmax(-1) == labels).mean())
print(f"best model on {len(labels)} test images: accuracy {accuracy:.4f}")
if result.test_metrics:  # the same weights: equal up to bfloat16 rounding on a TPU
    print(f"the study's own test score: {result.test_metrics['accuracy']:.4f}")""",
        [],
    ),
    (
        MD,
        """\
## 8. The final model

With `final_epochs`, the study ended by retraining the best configuration from its own seed
for `FINAL_EPOCHS` epochs (`final_on_train_and_val=True` would train it on the train and eval
splits together), scoring the test split once, and exporting it to the study directory:
`final/model.keras` for Keras and `final/saved_model/` for TF Serving
(`tf.saved_model.load(path).serve(x)`). A rerun reuses it instead of training again.""",
        [],
    ),
    (
        CODE,
        """\
final = result.final
if final and final["status"] == "ok":
    final_model = tpu_bo.load_final_model(OUTPUT_DIR)
    logits = final_model.predict(images.astype(np.float32) / 255.0, batch_size=500, verbose=0)
    accuracy = float((logits.argmax(-1) == labels).mean())
    print(
        f"final model (trial {final['trial']}, {final['epochs']} epoch(s) on "
        f"{final['trained_on']}) on {len(labels)} test images: accuracy {accuracy:.4f}"
    )
    print(f"the final run's own test score: {final['test']['accuracy']:.4f}")
    print("for serving:", final["paths"]["saved_model"])
else:
    print("no final model:", final["error"] if final else "FINAL_EPOCHS is 0")""",
        [],
    ),
    (
        MD,
        """\
## Next

* More trials: raise `N_ITER` and run again; the study continues where it stopped.
* Your own model: pass `model=my_builder` (a function `(hp, input_shape, num_classes)`
  returning an uncompiled Keras model); see docs/data_and_models.md.
* The same study from a shell: `python -m tpu_bo.main --flagfile=flags/mnist_blog_tpu.flags`.""",
        [],
    ),
]


def _section(name: str) -> list[tuple[str, str, list[str]]]:
    """The ``CELLS`` of another file of this directory (kept apart for the 400-line limit)."""
    path = pathlib.Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CELLS


# Section 9 (optional PBT) goes before "Next".
CELLS[-1:-1] = _section("quickstart_pbt")


def build() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "accelerator": "TPU",
        "colab": {"provenance": []},
    }
    for kind, source, tags in CELLS:
        if kind == MD:
            cell = nbformat.v4.new_markdown_cell(source)
        else:
            cell = nbformat.v4.new_code_cell(source)
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"
    return nb


PATH = pathlib.Path(__file__).with_name("quickstart.ipynb")

if __name__ == "__main__":
    nbformat.write(build(), PATH)
    print(f"wrote {PATH}")
