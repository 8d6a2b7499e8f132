"""``python -m tpu_bo.smoke`` on this CPU, run as a user runs it: every check for real."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT


def smoke(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, dict[str, dict]]:
    report = tmp_path / "smoke.json"
    run = subprocess.run(
        [sys.executable, "-m", "tpu_bo.smoke", f"--json={report}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    checks = {c["name"]: c for c in json.loads(report.read_text())["checks"]}
    return run, checks


def test_every_check_passes_on_the_cpu_and_the_report_is_complete(tmp_path):
    run, checks = smoke(tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr[-2000:]
    assert list(checks) == [
        "versions", "tpu plugin", "cli study", "devices", "throughput", "pack = solo",
        "no retrace", "reset", "best weights", "pbt exploit", "compiled head",
        "checkpoint resume", "two structures", "final model", "host fallback", "round trips",
        "bfloat16",
    ]  # fmt: skip
    failed = {n: c["detail"] for n, c in checks.items() if c["ok"] is False}
    assert not failed, failed
    assert "tensorflow" in checks["versions"]["detail"] and "keras" in checks["versions"]["detail"]
    assert "3 trials (ok)" in checks["cli study"]["detail"]
    devices = checks["devices"]["detail"]
    assert "replica" in devices and "eager ops on" in devices
    detail = checks["throughput"]["detail"]  # --parallel_trials=auto's own table
    assert "trial-steps/s K=1 " in detail and "--parallel_trials=auto takes K=" in detail
    assert "float32 tolerance" in checks["pack = solo"]["detail"]
    assert (
        "weights redrawn on the device, 2 reset trace(s) for 2 program(s)"
        in (checks["reset"]["detail"])
    )
    assert checks["bfloat16"]["ok"] is None  # mixed precision is off on a CPU by default
    lines = run.stdout.splitlines()
    assert (
        "0 after it (every replica); 1 copy trace(s) for 2 exploits"
        in (checks["pbt exploit"]["detail"])
    )
    assert "program vs Keras evaluate" in checks["compiled head"]["detail"]
    assert "resumed from epoch 1" in checks["checkpoint resume"]["detail"]
    assert "2 programs, traces after each trial [2, 4, 4, 4]" in checks["two structures"]["detail"]
    assert "model.keras" in checks["final model"]["detail"]
    assert checks["host fallback"]["detail"].startswith("1 warning (")
    trips = checks["round trips"]["detail"]
    assert checks["round trips"]["ok"] is None and "host round-trips at an epoch boundary" in trips
    assert lines[-1].startswith("result: 14 PASS, 0 FAIL, 3 INFO in ")
    assert "keras 3." in lines[-1] and "python 3." in lines[-1]  # the versions, for a report
    # Nothing of TensorFlow's load-time INFO breaks up the table (tpu_bo.terminal).
    assert "oneDNN custom operations" not in run.stderr and "InitializeLog" not in run.stderr


def test_bfloat16_is_checked_with_mixed_precision(tmp_path):
    run, checks = smoke(tmp_path, "--mixed_precision=on", "--skip=cli,throughput")
    assert run.returncode == 0, run.stdout + run.stderr[-2000:]
    assert checks["bfloat16"]["ok"] is True
    assert "layers compute in bfloat16" in checks["bfloat16"]["detail"]
    assert "bfloat16 tolerance" in checks["pack = solo"]["detail"]


def test_a_missing_tpu_is_a_fail_line_and_a_non_zero_exit(tmp_path):
    run, checks = smoke(tmp_path, "--accelerator=tpu", "--skip=cli,throughput")
    assert run.returncode == 1
    assert checks["devices"]["ok"] is False
    assert checks["devices"]["detail"].startswith("--accelerator: tpu was requested")
    assert "Traceback" not in run.stdout + run.stderr
    assert "FAIL  devices" in run.stdout
    failed = next(line for line in run.stdout.splitlines() if line.startswith("FAIL"))
    assert failed.endswith("]") and "keras 3." in failed  # a pasted line names the versions
    assert "1 FAIL, 0 INFO (devices) in " in run.stdout.splitlines()[-1]


def test_an_unknown_skip_is_a_usage_error():
    run = subprocess.run(
        [sys.executable, "-m", "tpu_bo.smoke", "--skip=everything"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and "--skip: unknown check(s) everything" in run.stderr


def test_a_tpu_without_libtpu_fails_the_plugin_check_only_where_a_tpu_may_be_used(monkeypatch):
    from tpu_bo.device import tpu_env
    from tpu_bo.smoke import checks as smoke

    setup = tpu_env.Setup(
        evidence="/dev/vfio/0",
        values={tpu_env.LIBRARY_VAR: None, tpu_env.C_API_VAR: None},
        set_here=(),
        problem="libtpu is not installed, so TensorFlow cannot reach the TPU",
    )
    monkeypatch.setattr(tpu_env, "SETUP", setup)
    assert smoke.plugin("tpu")[0] is False and smoke.plugin("auto")[0] is False
    ok, detail = smoke.plugin("gpu")
    assert ok is None and "libtpu is not installed" in detail
