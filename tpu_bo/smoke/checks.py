r"""``python -m tpu_bo.smoke``: the check to run first on a new accelerator (minutes, not hours).

  python -m tpu_bo.smoke                      # auto: the TPU, else the GPUs, else the CPU
  python -m tpu_bo.smoke --accelerator=tpu    # a TPU VM or Colab's TPU runtime
  python -m tpu_bo.smoke --json=smoke.json    # also write the report as JSON

It prints one line per check, PASS, FAIL or INFO, and exits with status 1 if any check failed.
Paste the whole output into a bug report: it names the packages, the TPU plugin variables,
the devices and the strategy, besides the results.

The checks, in order:

1. ``versions``: tensorflow / tensorflow-tpu / libtpu / keras; fails if a CPU/GPU TensorFlow
   is installed next to tensorflow-tpu (both provide the ``tensorflow`` module).
2. ``tpu plugin``: the PJRT plugin variables (:mod:`tpu_bo.device.tpu_env`).
3. ``cli study``: a 3-trial study of the offline digits set through ``python -m tpu_bo.main``,
   run *before* this process touches the accelerator (a TPU is held by one process at a time).
4. ``devices``: the devices, the strategy, its replicas and the default eager device.
5. ``throughput``: the blog CNN on MNIST-shaped random data, trial-steps per second of one
   trial per program against four (``--parallel_trials=4``), and their ratio.
6. ``pack = solo``: each trial of a pack of two ends with the weights and score it has when
   trained alone (tolerances fit bfloat16, which a TPU uses for float32 matmuls too).
7. ``no retrace``: a second trial on a traced program traces nothing.
8. ``reset``: a trial run after another one on the same program gives the history it gives
   on a fresh program (weights, optimizer state and dropout draws are all reset).
9. ``best weights``: saved and reloaded (through the program and through a fresh Keras
   model, as ``load_best_model`` does), they score what the trial scored.
10. ``pbt exploit``: PBT's on-device copy between two towers is exact on every replica and
    traced once (``--scheduler=pbt``).
11. ``compiled head``, ``checkpoint resume``, ``two structures``, ``final model``, ``host
    fallback`` and ``round trips``: what a real study does beyond one trial
    (:mod:`tpu_bo.smoke.study`, which also says why out of memory is not probed).
12. ``bfloat16``: with mixed precision (default on a TPU), layers really compute in bfloat16.

Every FAIL line, and the last line, name the versions of TensorFlow, libtpu, Keras, tpu_bo
and Python; the last line also names the checks that failed.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

from tpu_bo import terminal
from tpu_bo.device import tpu_env
from tpu_bo.smoke.report import Report

PACKAGES = (
    "tensorflow",
    "tensorflow-cpu",
    "tensorflow-tpu",
    "libtpu",
    "keras",
    "tensorflow-datasets",
    "bayesian-optimization",
    "numpy",
    "tpu_bo",
)


# What a bug report needs on every FAIL line (tpu_bo.smoke.report).
SHORT = ("tensorflow", "tensorflow-cpu", "tensorflow-tpu", "libtpu", "keras", "tpu_bo")


def short_versions() -> str:
    """The versions of :data:`SHORT` installed, and Python's."""
    found = []
    for name in SHORT:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return ", ".join([*found, f"python {platform.python_version()}"])


def versions() -> tuple[bool, str]:
    """Installed packages; a FAIL where importing TensorFlow would fail or hang."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    shown = ", ".join(f"{n} {v}" for n, v in found.items())
    python = f"python {platform.python_version()} ({platform.system()} {platform.machine()})"
    clash = [n for n in ("tensorflow", "tensorflow-cpu") if n in found]
    if "tensorflow-tpu" in found and clash:
        return False, (
            f"{shown}; {python}: {' and '.join(clash)} next to tensorflow-tpu shadow its module; "
            "pip uninstall them and reinstall requirements-tpu.txt"
        )
    if not {"tensorflow", "tensorflow-cpu", "tensorflow-tpu"} & set(found):
        return False, f"{shown}; {python}: TensorFlow is not installed"
    stray = tpu_env.stray_tpu_build(tpu_env.ensure_configured())
    if stray:
        return False, f"{shown}; {python}: {stray}"
    return True, f"{shown}; {python}"


def plugin(accelerator: str) -> tuple[bool | None, str]:
    """The PJRT plugin variables, set before TensorFlow was imported.

    A problem fails the check only when a TPU may be used (``tpu`` or ``auto``).
    """
    setup = tpu_env.ensure_configured()
    path = setup.values.get(tpu_env.LIBRARY_VAR)
    problem = setup.problem or (
        f"{path} does not exist" if path and not os.path.exists(path) else None
    )
    if problem is None:
        return True, setup.describe()
    detail = setup.describe() if setup.problem else f"{setup.describe()}; {problem}"
    return (False if accelerator in ("tpu", "auto") else None), detail


def cli_study(accelerator: str, tpu: str, workdir: str) -> tuple[bool, str]:
    """Runs a 3-trial digits study through the CLI in a child process."""
    output_dir = os.path.join(workdir, "cli_study")
    command = [
        sys.executable, "-m", "tpu_bo.main", "--dataset=digits", "--epochs=1",
        "--init_points=2", "--n_iter=1", f"--accelerator={accelerator}", f"--tpu={tpu}",
        f"--output_dir={output_dir}",
    ]  # fmt: skip
    started = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - started
    summary_path = os.path.join(output_dir, "summary.json")  # tpu_bo.study.output_dir.SUMMARY
    summary = {}
    if os.path.exists(summary_path):
        with open(summary_path) as f:
            summary = json.load(f)
    told = summary.get("trials", 0)
    if run.returncode != 0 or told != 3:
        last = (run.stderr.strip() or run.stdout.strip() or "no output").splitlines()[-1]
        return False, f"exit {run.returncode}, {told} of 3 trials told: {last}"
    best = next((line for line in run.stdout.splitlines() if line.startswith("best:")), "")
    statuses = sorted(summary.get("counts", {}))
    return True, f"3 trials ({', '.join(statuses)}) in {seconds:.0f} s; {best}"


def main(argv: list[str] | None = None) -> int:
    """Runs every check; returns 1 if any failed, else 0."""
    args = _parse(argv)
    print(
        f"tpu_bo smoke check: --accelerator={args.accelerator} --tpu={args.tpu}, "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        flush=True,
    )
    report = Report()
    report.versions = short_versions()
    usable = report.add("versions", versions)
    report.add("tpu plugin", lambda: plugin(args.accelerator))
    with tempfile.TemporaryDirectory() as workdir:
        if not usable:  # importing TensorFlow would fail, or hang for minutes
            return _finish(report, args)
        if "cli" not in args.skip:
            report.add("cli study", lambda: cli_study(args.accelerator, args.tpu, workdir))
        # Imports TensorFlow, after the child process ended; without its load-time INFO lines,
        # which TF 2.21 writes before it reads TF_CPP_MIN_LOG_LEVEL (tpu_bo.terminal).
        with terminal.quiet_tensorflow_load():
            from tpu_bo.smoke import device

        device.run(report, args, workdir)
    return _finish(report, args)


def _finish(report: Report, args: argparse.Namespace) -> int:
    print(f"result: {report.summary()}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report.to_json(), f, indent=2)
    return 1 if any(c.ok is False for c in report.checks) else 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tpu_bo.smoke",
        description="Checks tpu_bo on this machine's accelerator.",
    )
    parser.add_argument("--accelerator", choices=("auto", "tpu", "gpu", "cpu"), default="auto")
    parser.add_argument("--tpu", default="local", help="'local', or a TPU or pod-slice name.")
    parser.add_argument(
        "--mixed_precision",
        choices=("auto", "on", "off"),
        default="auto",
        help="bfloat16 compute; auto: on for a TPU, off elsewhere.",
    )
    parser.add_argument(
        "--skip",
        default="",
        help="Comma-separated checks to skip: cli, throughput.",
    )
    parser.add_argument("--json", default="", help="Also write the report to this JSON file.")
    args = parser.parse_args(argv)
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = args.skip - {"cli", "throughput"}
    if unknown:
        parser.error(f"--skip: unknown check(s) {', '.join(sorted(unknown))}; use cli, throughput")
    return args


if __name__ == "__main__":
    sys.exit(main())
