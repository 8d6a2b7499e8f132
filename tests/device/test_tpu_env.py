"""The TPU plugin variables: set on a TPU machine, before TensorFlow is imported, by every entry."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tpu_bo.device import tpu_env


@pytest.fixture
def tpu_node(monkeypatch):
    """A machine whose /dev holds a v5e VFIO group, and a libtpu at /opt/libtpu.so."""
    real = tpu_env.glob.glob
    monkeypatch.setattr(
        tpu_env.glob, "glob", lambda p: ["/dev/vfio/0"] if p.startswith("/dev/vfio") else real(p)
    )
    monkeypatch.setattr(tpu_env, "libtpu_path", lambda: "/opt/libtpu.so")


def test_a_tpu_machine_gets_both_variables(tpu_node, monkeypatch):
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)  # as before TF's import
    environ: dict[str, str] = {}
    setup = tpu_env.configure(environ)
    assert environ == {
        "TF_PLUGGABLE_DEVICE_LIBRARY_PATH": "/opt/libtpu.so",
        "NEXT_PLUGGABLE_DEVICE_USE_C_API": "true",
    }
    assert setup.evidence == "/dev/vfio/0" and setup.problem is None
    assert "(set by tpu_bo)" in setup.describe()


def test_the_users_own_values_are_kept(tpu_node, monkeypatch):
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    environ = {"TF_PLUGGABLE_DEVICE_LIBRARY_PATH": "/mine/libtpu.so"}
    setup = tpu_env.configure(environ)
    assert environ["TF_PLUGGABLE_DEVICE_LIBRARY_PATH"] == "/mine/libtpu.so"
    assert setup.set_here == ("NEXT_PLUGGABLE_DEVICE_USE_C_API",)


def test_a_pod_slice_client_loads_no_plugin(tpu_node):
    environ = {"TPU_LOAD_LIBRARY": "0"}
    setup = tpu_env.configure(environ)
    assert environ == {"TPU_LOAD_LIBRARY": "0"} and "pod slice" in setup.describe()


def test_tensorflow_imported_first_is_reported(tpu_node):
    import tensorflow  # noqa: F401 - the situation under test

    setup = tpu_env.configure({})
    assert "imported before tpu_bo" in setup.problem


def test_no_libtpu_is_one_sentence(monkeypatch):
    monkeypatch.setattr(tpu_env, "libtpu_path", lambda: None)
    setup = tpu_env.configure({"TPU_ACCELERATOR_TYPE": "v5litepod-1"})
    assert setup.values["TF_PLUGGABLE_DEVICE_LIBRARY_PATH"] is None
    assert "libtpu is not installed" in setup.problem and "requirements-tpu.txt" in setup.problem


def test_a_machine_without_a_tpu_is_left_alone():
    environ: dict[str, str] = {}
    assert tpu_env.configure(environ).evidence is None and environ == {}


# Started in every child below: fakes a TPU device node, and stands in for TensorFlow so that
# the moment it is imported records the environment and ends the process.
SITECUSTOMIZE = """
import glob, importlib.abc, json, os, sys
_glob = glob.glob
glob.glob = lambda p, *a, **k: ["/dev/accel0"] if p == "/dev/accel*" else _glob(p, *a, **k)

class _Tensorflow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow":
            names = ("TF_PLUGGABLE_DEVICE_LIBRARY_PATH", "NEXT_PLUGGABLE_DEVICE_USE_C_API")
            with open(os.environ["RECORD"], "a") as f:
                f.write(json.dumps({"argv": sys.argv, **{n: os.environ.get(n) for n in names}}))
                f.write("\\n")
            os._exit(0)
        return None

sys.meta_path.insert(0, _Tensorflow())
"""


@pytest.mark.parametrize(
    "command",
    [
        ["-c", "import tpu_bo; import tensorflow"],
        ["-m", "tpu_bo.main", "--epochs=1", "--init_points=1", "--n_iter=1"],
        ["-m", "tpu_bo.smoke", "--skip=cli"],
    ],
    ids=["import", "cli", "smoke"],
)
def test_every_entry_point_sets_the_variables_before_tensorflow_is_imported(tmp_path, command):
    (tmp_path / "sitecustomize.py").write_text(SITECUSTOMIZE)
    (tmp_path / "libtpu").mkdir()
    (tmp_path / "libtpu" / "libtpu.so").write_bytes(b"")
    (tmp_path / "libtpu" / "__init__.py").write_text(
        "import os\ndef get_library_path():\n"
        "    return os.path.join(os.path.dirname(__file__), 'libtpu.so')\n"
    )
    record = tmp_path / "record.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_PLUGGABLE", "NEXT_PLUG"))}
    env.update(PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}", RECORD=str(record))
    run = subprocess.run(
        [sys.executable, *command],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    seen = [json.loads(line) for line in record.read_text().splitlines()]
    assert seen, "tensorflow was never imported"
    for entry in seen:
        assert entry["TF_PLUGGABLE_DEVICE_LIBRARY_PATH"] == str(tmp_path / "libtpu" / "libtpu.so")
        assert entry["NEXT_PLUGGABLE_DEVICE_USE_C_API"] == "true"


def test_the_notebook_imports_tpu_bo_before_tensorflow():
    import nbformat

    nb = nbformat.read(ROOT / "colab" / "quickstart.ipynb", as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert code.index("import tpu_bo") < code.index("import tensorflow")


def test_tensorflow_tpu_on_a_machine_without_a_tpu_is_named(monkeypatch):
    real = tpu_env.importlib.metadata.version

    def version(name):
        return "2.20.0" if name == "tensorflow-tpu" else real(name)

    monkeypatch.setattr(tpu_env.importlib.metadata, "version", version)
    no_tpu = tpu_env.configure({})
    warning = tpu_env.stray_tpu_build(no_tpu, {})
    assert warning.startswith("tensorflow-tpu is installed but this machine has no TPU device")
    assert "TPU_SKIP_MDS_QUERY=1" in warning
    assert tpu_env.stray_tpu_build(no_tpu, {"TPU_SKIP_MDS_QUERY": "1"}) is None
    on_tpu = tpu_env.configure({"TPU_ACCELERATOR_TYPE": "v5litepod-1", "TPU_LOAD_LIBRARY": "0"})
    assert tpu_env.stray_tpu_build(on_tpu, {}) is None


def fake_tensorflow_tpu(directory) -> dict[str, str]:
    """An environment in which tensorflow-tpu 2.20.0 looks installed (a dist-info only)."""
    info = directory / "tensorflow_tpu-2.20.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tensorflow-tpu\nVersion: 2.20.0\n")
    return {**os.environ, "PYTHONPATH": f"{directory}{os.pathsep}{ROOT}"}


def test_the_smoke_check_stops_before_importing_a_tensorflow_that_would_hang(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "tpu_bo.smoke"],
        cwd=tmp_path,
        env=fake_tensorflow_tpu(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stderr[-2000:]
    lines = [line for line in run.stdout.splitlines() if line[:4] in ("PASS", "FAIL", "INFO")]
    assert [line.split()[1] for line in lines] == ["versions", "tpu"]  # nothing after
    assert lines[0].startswith("FAIL  versions") and "tensorflow-tpu" in lines[0]


def test_the_cli_warns_about_tensorflow_tpu_without_a_tpu(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "tpu_bo.main", "--dataset=no_such_dataset"],
        cwd=tmp_path,
        env={**fake_tensorflow_tpu(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2
    assert "warning: tensorflow-tpu is installed but this machine has no TPU device" in run.stderr
