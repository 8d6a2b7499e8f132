"""The Colab quickstart notebook, executed top to bottom on CPU as a user would run it."""

from __future__ import annotations

import copy
import os
import re

import nbformat
import pytest

from tests.conftest import ROOT

NOTEBOOK = ROOT / "colab" / "quickstart.ipynb"


def test_the_notebook_is_generated_from_its_source():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_quickstart", NOTEBOOK.with_name("make_quickstart.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = [(c.cell_type, c.source) for c in module.build().cells]
    actual = [(c.cell_type, c.source) for c in nbformat.read(NOTEBOOK, as_version=4).cells]
    assert actual == expected, (
        "colab/quickstart.ipynb is stale: run python colab/make_quickstart.py"
    )


def with_parameters(nb: nbformat.NotebookNode, **values) -> nbformat.NotebookNode:
    """Inserts a cell of overrides after the cell tagged ``parameters``, as papermill does."""
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    source = "\n".join(f"{name} = {value!r}" for name, value in values.items())
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(source))
    return nb


def test_the_quickstart_runs_top_to_bottom_and_its_study_cell_resumes(tmp_path, mnist_dir):
    from nbclient import NotebookClient

    output_dir = tmp_path / "study"
    params = dict(
        DATA_DIR=mnist_dir,
        OUTPUT_DIR=str(output_dir),
        TRAIN_SPLIT="train[:3%]",
        EVAL_SPLIT="train[97%:]",
        INIT_POINTS=2,
        N_ITER=1,
        FINAL_EPOCHS=1,
        PBT=True,
        PBT_MEMBERS=4,
        PBT_EPOCHS=2,
        # The smoke check's own CLI study and timing are tests/smoke/test_checks.py's; here
        # the point is that the notebook runs it before its kernel imports TensorFlow.
        SMOKE_SKIP="cli,throughput",
    )

    nb = with_parameters(nbformat.read(NOTEBOOK, as_version=4), **params)
    # Then "Next": raise N_ITER and run the study cell again; the study continues.
    study_cell = next(c for c in nb.cells if c.source.startswith("result = tpu_bo.run_study("))
    nb.cells += [nbformat.v4.new_code_cell("N_ITER = 2"), copy.deepcopy(study_cell)]
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env_path) if p)
    try:
        NotebookClient(
            nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
        ).execute()
    finally:
        os.environ["PYTHONPATH"] = env_path
    text = "\n".join(
        out.get("text", "")
        for cell in nb.cells[:-2]  # the notebook as shipped; the rerun is checked below
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )
    assert "tpu_bo is already installed" in text
    # The smoke check ran before the kernel imported TensorFlow, and passed.
    assert re.search(r"^result: \d+ PASS, 0 FAIL", text, flags=re.MULTILINE), text[-3000:]
    assert "PASS  pack = solo" in text and "PASS  pbt exploit" in text
    assert "DefaultStrategy with 1 replica(s)" in text or "replica(s)" in text
    assert "best trial:" in text and "best model on 10000 test images" in text
    reloaded = re.search(r"best model on 10000 test images: accuracy ([0-9.]+)", text)
    measured = re.search(r"the study's own test score: ([0-9.]+)", text)
    assert reloaded and measured and reloaded.group(1) == measured.group(1)
    pattern = r"final model \(trial \d+, 1 epoch\(s\) on train\) on 10000 test images: accuracy "
    final = re.search(pattern + r"([0-9.]+)", text)
    own = re.search(r"the final run's own test score: ([0-9.]+)", text)
    assert final and own and final.group(1) == own.group(1), text[-3000:]
    images = [
        out
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if "image/png" in out.get("data", {})
    ]
    assert len(images) == 2, "summary.png (the study's and PBT's) was not shown inline"
    assert re.search(r"^PBT: best val_accuracy 0\.\d+, 2 exploit\(s\)$", text, flags=re.M), text
    assert re.search(r"^  epochs 1-\d: trial \d+ with \{'", text, flags=re.M)
    rerun = "\n".join(out.get("text", "") for out in nb.cells[-1].get("outputs", []))
    assert "resuming: 3 trial(s) already in the study" in rerun, rerun[-3000:]
    from tpu_bo.results import load_records

    assert [r.number for r in load_records(str(output_dir))] == [0, 1, 2, 3]


@pytest.mark.parametrize("name", ["google.colab"])
def test_colab_only_cells_are_guarded(name):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and (name in cell.source or "%tensorboard" in cell.source):
            assert "if IN_COLAB" in cell.source or "IN_COLAB =" in cell.source, cell.source
