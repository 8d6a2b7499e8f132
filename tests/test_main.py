"""The command line, run as a user runs it: ``python -m tpu_bo.main``.

Also: The flags are the Config's fields; every flagfile in flags/ documents itself, parses, runs.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
import subprocess
import sys

import pytest
from absl import flags

from tests.conftest import ROOT, run_cli, start_cli
from tpu_bo import main
from tpu_bo.config import FLAG_GROUPS, Config, flag_name
from tpu_bo.errors import ConfigError
from tpu_bo.results import load_records


def journal(path):
    """The study's finished trials, in order, as the user reads them."""
    from tpu_bo.results import load_records

    return [r for r in load_records(str(path)) if r.status.value != "running"]


def checkpoint(path, number):
    """Running trial ``number``'s saved checkpoint, or None."""
    from tpu_bo.study.output_dir import OutputDir

    name = f"inflight/trial_{number:04d}.npz"
    if not (path / name).exists():
        return None
    saved = OutputDir(str(path), writer=False).load_checkpoint(name)
    return saved


def test_importing_tpu_bo_does_not_import_tensorflow():
    code = (
        "import sys, tpu_bo, tpu_bo.main, tpu_bo.config, tpu_bo.search.space, tpu_bo.train.models; "
        "print('tensorflow' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout
    assert out.strip() == "False"


# absl's prefix (level, date, time: I1202 06:39:31.017427 ...), TF's banner and absl's notice.
ABSL_PREFIX = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d", re.MULTILINE)
NOT_OURS = ("oneDNN", "absl::InitializeLog")
# What may come before the study's header: the accelerator line, K, tpu_bo's own lines.
BEFORE_HEADER = ("accelerator=", "parallel_trials=auto: ", "ramp: ", "tpu_bo: ")


def assert_console_is_ours(run: subprocess.CompletedProcess) -> None:
    """Before the header only our lines; nothing in absl's format or TF's start-up chatter
    anywhere; on stderr only warnings and errors (a real one may come from TF or Keras)."""
    both = run.stdout + run.stderr
    assert not ABSL_PREFIX.search(both) and not [s for s in NOT_OURS if s in both], run.stderr
    before = run.stdout.split("\nstudy: ")[0].splitlines()
    assert before and all(line.startswith(BEFORE_HEADER) for line in before), before
    stray = [line for line in run.stderr.splitlines() if not re.search("warning|error", line, re.I)]
    assert not stray, run.stderr


def test_default_study_runs_offline_and_resumes_from_its_flagfile(tmp_path):
    out_dir = tmp_path / "study"
    run = run_cli(
        "--init_points=2",
        "--n_iter=1",
        "--epochs=2",
        "--final_epochs=1",
        f"--output_dir={out_dir}",
        env={"TF_CPP_MIN_LOG_LEVEL": None},  # as a user runs it (conftest quietens the tests)
    )
    assert run.returncode == 0, run.stderr
    assert_console_is_ours(run)
    assert "built the program" not in run.stderr  # detail: --verbosity=1
    assert "accelerator=auto: no TPU" in run.stdout and "on CPU" in run.stdout
    assert "study: digits / mnist_cnn, 3 trials" in run.stdout
    assert "best: trial" in run.stdout and "learning_rate=" in run.stdout
    # parallel_trials=auto measured K first; no trial traced after the first one.
    assert len({r.traces for r in journal(out_dir)}) == 1
    assert "parallel_trials=auto: K=" in run.stdout
    assert "final: epoch 1/1 loss" in run.stdout and "final: exported" in run.stdout
    assert (out_dir / "final" / "model.keras").exists()
    flagfile = (out_dir / "flags.txt").read_text()
    assert "--dataset=digits" in flagfile and "--n_iter=1" in flagfile
    assert "--final_epochs=1" in flagfile
    assert json.loads((out_dir / "config.json").read_text())["model"] == "mnist_cnn"
    # The recorded flags repeat the run; a later flag overrides the file (last value wins).
    # --verbosity=1 brings tpu_bo's detail back, in the same plain format.
    again = run_cli(
        f"--flagfile={out_dir / 'flags.txt'}",
        "--n_iter=2",
        "--verbosity=1",
        env={"TF_CPP_MIN_LOG_LEVEL": None},
    )
    assert again.returncode == 0, again.stderr
    assert "tpu_bo: config: " in again.stderr and "--n_iter=2" in again.stderr
    assert "tpu_bo: built the program for structure" in again.stderr
    assert not ABSL_PREFIX.search(again.stdout + again.stderr), again.stderr
    assert "resuming: 3 trial(s) already in the study" in again.stdout
    assert [r.number for r in journal(out_dir)] == [0, 1, 2, 3]


BAD_INPUT = [
    (["--accelerator=tpu"], "accelerator"),
    (["--accelerator=gpu"], "accelerator"),
    (["--param=learning_rate:log:1e-2:1e-4"], "param"),
    (["--param=dropout_2:float:0.5:0.5"], "param"),
    (["--param=learning_rate:log:0:1e-2"], "param"),
    (["--param=dense_units:choice:"], "param"),
    (["--param=learning_rate:gauss:0:1"], "param"),
    (["--param=dropuot_2:float:0.1:0.5"], "param"),
    (["--dataset=no_such_dataset_xyz"], "dataset"),
    (["--model=no_such_pkg.models:build"], "model"),
    (["--n_iter=-1"], "n_iter"),
    (["--cpu_replicas=3", "--accelerator=cpu"], "batch_size"),
    (["--fixed=dense_units"], "fixed"),
    (["--space_file=/no/such/space.json"], "space_file"),
    (["--objective=accuracy"], "objective"),
    (["--parallel_trials=0"], "parallel_trials"),
    (["--parallel_trials=foo"], "parallel_trials"),
    (["--scheduler=pbt"], "parallel_trials"),  # auto: a population needs a fixed size
    (["--scheduler=pbt", "--parallel_trials=2"], "parallel_trials"),
]
# Run as separate processes: the refusals of absl's flag parser (bounds), one found once the
# device is asked for, and one found once the data are read. The others go through the same
# main() in this process, which spares a TensorFlow start-up per case.
IN_A_PROCESS = (
    "--n_iter=-1",
    "--accelerator=tpu",
    "--dataset=no_such_dataset_xyz",
)


def _run_main_here(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """``main.main`` on ``args``, as ``python -m tpu_bo.main`` runs it: its exit status and
    what it printed to stderr."""
    try:
        flags.FLAGS(["tpu_bo.main", *args])
        status = main.main(["tpu_bo.main"])
    finally:
        flags.FLAGS.unparse_flags()
    return status, capsys.readouterr().err


@pytest.mark.parametrize(("args", "flag"), BAD_INPUT)
def test_bad_input_is_one_sentence_naming_the_flag(args, flag, tmp_path, capsys):
    args = [*args, "--epochs=1", "--init_points=1", f"--output_dir={tmp_path}"]
    if args[0] in IN_A_PROCESS:
        run = run_cli(*args)
        status, stderr = run.returncode, run.stderr
    else:
        status, stderr = _run_main_here(args, capsys)
    assert status != 0
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith(("error:", "FATAL"))]
    assert len(lines) == 1, stderr
    assert f"--{flag}" in lines[0]
    assert not (tmp_path / "trials.journal").exists()
    if args[0] != "--param=dropuot_2:float:0.1:0.5":  # found only once the model is built
        assert not any(tmp_path.iterdir()), "a failed start left files behind"


def test_stray_arguments_are_rejected():
    run = run_cli("mnist")
    assert run.returncode == 2 and "unexpected arguments ['mnist']" in run.stderr


def test_ctrl_c_ends_cleanly_and_keeps_the_journal(tmp_path):
    import signal
    import time

    # A budget the study cannot spend before the signal, however slow the polling here is.
    proc = start_cli("--init_points=2", "--n_iter=500", "--epochs=3", f"--output_dir={tmp_path}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (tmp_path / "trials.journal").exists() and journal(tmp_path):
            break
        time.sleep(0.5)
    assert proc.poll() is None, "the study ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out[-2000:] + err[-2000:]
    assert "Rerun the same command to resume" in out
    assert "Traceback" not in err
    records = journal(tmp_path)
    assert 1 <= len(records) < 502
    assert [r.number for r in records] == list(range(len(records)))
    assert not (tmp_path / "writer.lock").exists() or _lock_is_free(tmp_path)
    # The CLI ends an interrupted study at once (os._exit): the TensorBoard events of every
    # trial, the running ones too (not in the journal's records yet), must be on disk by then.
    runs = sorted((tmp_path / "tensorboard").glob("trial_*"))
    assert len(runs) >= len(records)
    assert all(_holds_hparams(run) for run in runs), [r.name for r in runs]


def _holds_hparams(run):
    import tensorflow as tf

    return any(
        v.metadata.plugin_data.plugin_name == "hparams"
        for path in tf.io.gfile.glob(f"{run}/events.out.tfevents.*")
        for event in tf.compat.v1.train.summary_iterator(path)
        for v in event.summary.value
    )


def _lock_is_free(path):
    from tpu_bo.study.writer_lock import WriterLock

    lock = WriterLock(str(path))
    lock.acquire()
    lock.release()
    return True


def start_two_workers(output_dirs, *args):
    """Starts ``python -m tpu_bo.main`` as two workers of one TF_CONFIG cluster on localhost."""
    import socket

    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("localhost", 0))
            ports.append(s.getsockname()[1])
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs = []
    for index, output_dir in enumerate(output_dirs):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        procs.append(start_cli(*args, f"--output_dir={output_dir}", env={"TF_CONFIG": tf_config}))
    return procs


def run_two_workers(output_dirs, *args):
    """Runs two workers (see :func:`start_two_workers`) to the end."""
    return [(p, *p.communicate(timeout=300)) for p in start_two_workers(output_dirs, *args)]


def test_lockstep_workers_stop_together_when_one_is_killed_and_resume_with_the_chief_writing(
    tmp_path,
):
    """TF_CONFIG with two workers under --accelerator=auto: MultiWorkerMirroredStrategy.

    auto must not probe for a TPU first (that starts TensorFlow's context, after which the
    strategy cannot configure its collectives). A killed worker (a preempted host) stops its
    peer with one sentence; the same command on both then continues the trial in flight, and
    both workers end together, test score included, with the journal written once, by the
    chief.
    """
    import signal
    import time

    args = ["--accelerator=auto", "--epochs=2", "--batch_size=8", "--steps_per_execution=1"]
    args += ["--init_points=1", "--n_iter=1"]
    chief, worker = start_two_workers([tmp_path, tmp_path], *args)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and checkpoint(tmp_path, 0) is None:
        time.sleep(0.1)
    worker.send_signal(signal.SIGKILL)
    worker.communicate(timeout=60)
    out, err = chief.communicate(timeout=300)
    assert chief.returncode == 1, err[-3000:]
    assert "no TPU (not probed: TF_CONFIG names several workers)" in out
    assert "CollectiveAllReduceStrategy with 2 replicas" in out
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "another lockstep worker of this study stopped" in errors[0]
    assert "start every worker again with the same command" in errors[0]

    runs = run_two_workers([tmp_path, tmp_path], *args)
    for proc, out, err in runs:
        assert proc.returncode == 0, err[-3000:]
        assert "continuing trial 0 after epoch" in out
        assert "CollectiveAllReduceStrategy with 2 replicas" in out
        assert "Traceback" not in err
    ends = [[line for line in out.splitlines() if line.startswith(("best:", "test ("))]
            for _, out, _ in runs]  # fmt: skip
    assert len(ends[0]) == 2 and ends[0] == ends[1]
    records = journal(tmp_path)  # once each, by the chief
    assert [r.number for r in records] == [0, 1] and records[0].resumed_from_epoch >= 1
    assert not (tmp_path / "workers.check").exists()


def test_workers_that_do_not_share_the_output_dir_stop_together(tmp_path):
    runs = run_two_workers(
        [tmp_path / "a", tmp_path / "b"], "--accelerator=cpu", "--init_points=1", "--n_iter=1"
    )
    for proc, _, err in runs:
        assert proc.returncode == 2, err[-3000:]
        assert "Traceback" not in err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "is not one directory shared by every worker" in errors[0]
        assert errors[0].startswith("error: --output_dir: ") and "worker(s) 1" in errors[0]
    assert not journal_exists(tmp_path / "a") or not journal(tmp_path / "a")


def journal_exists(path):
    return (path / "trials.journal").exists()


@pytest.mark.parametrize(("parallel", "prune", "every"), [(2, "asha", 1), (1, "hyperband", 2)])
def test_sigkill_mid_trial_continues_that_trial_from_its_saved_epoch(
    tmp_path, parallel, prune, every
):
    """Kill -9 once trial 2 or later has saved an epoch of 3; the rerun finishes 8 trials.

    With ``parallel=2`` two trials train side by side, and both continue. ASHA (rungs from
    epoch 2) and Hyperband (from epoch 1) resume the same way. With ``--checkpoint_every=2``
    only epoch 2 is ever saved, so a kill loses at most 2 epochs of a trial (and the one in flight).
    """
    import signal
    import time

    args = [
        "--init_points=3",
        "--n_iter=5",
        "--epochs=3",
        "--batch_size=16",
        "--steps_per_execution=1",
        f"--parallel_trials={parallel}",
        f"--prune={prune}",
        f"--checkpoint_every={every}",
        f"--output_dir={tmp_path}",
        # 1 in 2 goes on at each rung. ASHA's first rung is epoch 2, so every trial saves
        # epoch 1 before it can be pruned (with a rung at epoch 1 a good first trial prunes
        # every later one at once, and no later trial ever saves an epoch to be killed after).
        "--reduction_factor=2",
        f"--min_epochs={2 if prune == 'asha' else 1}",
    ]
    proc = start_cli(*args)
    deadline = time.monotonic() + 240
    saved = {}
    while time.monotonic() < deadline and proc.poll() is None:
        if any(checkpoint(tmp_path, n) for n in range(2, 8)):  # a later trial saved an epoch
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the study ended before it could be killed"
    from tpu_bo.results import load_records

    before = journal(tmp_path)
    running = [r.number for r in load_records(str(tmp_path)) if r.status.value == "running"]
    assert running, "no trial was in flight"
    # A trial told just before the kill may leave its file behind; the rerun deletes it.
    saved = {n: checkpoint(tmp_path, n) for n in running if checkpoint(tmp_path, n)}
    assert all(m.epoch in range(every, 3, every) for m in saved.values())

    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    for number in running:
        after = f"after epoch {saved[number].epoch}" if number in saved else "from its start"
        assert f"continuing trial {number} {after}" in rerun.stdout
    records = journal(tmp_path)
    assert [r.number for r in records] == list(range(8))
    told_before = {r.number: r for r in before}
    for r in records:
        if r.number in told_before:
            assert r == told_before[r.number]
        elif r.number in saved:
            state = saved[r.number]
            assert r.resumed_from_epoch == state.epoch
            assert list(r.history[: state.epoch]) == state.history
        else:
            assert r.resumed_from_epoch is None
        if r.status.value == "ok":
            assert [h["epoch"] for h in r.history] == [1, 2, 3]
            assert r.steps == 3 * (1350 // 16)
    if prune == "asha":  # 1 in 2 goes on at epoch 2 (Hyperband's: tests/study/test_study.py)
        assert any(r.status.value == "pruned" for r in records), [r.status for r in records]
    assert not list((tmp_path / "inflight").iterdir())


def test_a_second_process_on_the_same_study_refuses_in_one_sentence(tmp_path):
    import time

    # A budget the first cannot finish while the second imports TensorFlow, so the lock is
    # held when the second asks, however loaded the machine; the first is killed afterwards.
    args = ["--init_points=2", "--n_iter=500", "--epochs=3", "--batch_size=8"]
    first = start_cli(*args, f"--output_dir={tmp_path}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and checkpoint(tmp_path, 0) is None:
        time.sleep(0.1)
    try:
        second = run_cli(*args, f"--output_dir={tmp_path}")
        assert first.poll() is None, "the first study ended before the second asked for the lock"
    finally:
        first.kill()
        first.communicate(timeout=60)
    assert second.returncode == 2 and "Traceback" not in second.stderr
    errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: --output_dir: another process")
    assert f"pid {first.pid}" in errors[0] and "--wait_for_lock" in errors[0]
    # The refused process wrote nothing: each finished trial is the first's, told once.
    numbers = [r.number for r in journal(tmp_path)]
    assert numbers and len(set(numbers)) == len(numbers)
    assert all(r.status.value == "ok" for r in journal(tmp_path))


def test_an_output_dir_without_write_permission_is_one_sentence():
    run = run_cli("--epochs=1", "--init_points=1", "--n_iter=1", "--output_dir=/sys/tpu_bo_study")
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith("error: --output_dir: cannot write")


FLAGFILES = sorted((ROOT / "flags").glob("*.flags"))
RENAMED = {"space": "param"}  # the one field whose flag has another name


def _parsed(*args: str) -> Config:
    try:
        flags.FLAGS(["tpu_bo", *args])
        return main.config_from_flags()
    finally:
        flags.FLAGS.unparse_flags()


def test_every_config_field_is_exactly_one_flag_with_its_default_and_help():
    ours = {flag.name: flag for flag in flags.FLAGS.get_flags_for_module(main)}
    fields = dataclasses.fields(Config)
    assert sorted(RENAMED.get(f.name, f.name) for f in fields) == sorted(ours)
    defaults = Config()
    for field in fields:
        flag = ours[flag_name(field)]
        assert flag_name(field) == RENAMED.get(field.name, field.name)
        assert flag.help.strip() and field.metadata["help"] in flag.help, field.name
        if field.name in ("space", "fixed"):
            assert isinstance(flag, flags.MultiFlag) and flag.default is None
        else:
            assert flag.default == getattr(defaults, field.name), field.name
        if field.metadata["choices"]:
            assert flag.parser.enum_values == list(field.metadata["choices"])
        if field.metadata["lower_bound"] is not None:
            assert flag.parser.lower_bound == field.metadata["lower_bound"]
        if isinstance(getattr(defaults, field.name), bool):
            assert isinstance(flag, flags.BooleanFlag), field.name
    assert ours["optimizer"].help.startswith("<rmsprop|adam|sgd|adamw>: ")
    assert ours["model"].parser.flag_type() == "string"


def test_help_is_one_paragraph_three_examples_and_every_flag_under_its_one_heading(capsys):
    with pytest.raises(SystemExit) as done:
        main._parse_flags(["tpu_bo.main", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "Config" not in text and "config.py" not in text
    intro, examples = text.split("\n\nexamples:\n")[0], text.split("examples:\n")[1]
    assert len(intro.split("\n\n")) == 2  # the usage line, then one paragraph
    commands = examples.split("\n\n")[0].replace("\\\n", " ").splitlines()
    assert len(commands) == 3 and all(c.startswith("  python -m tpu_bo.main") for c in commands)
    headings = re.findall(r"^(\w[\w ]*):$", text, flags=re.MULTILINE)
    assert headings == ["examples", *FLAG_GROUPS]
    listed: dict[str, list[str]] = {}
    for block in text.split("\n\n"):
        heading, _, body = block.partition(":\n")
        for name in re.findall(r"^  --(?:\[no\])?(\w+):", body, flags=re.MULTILINE):
            listed.setdefault(name, []).append(heading)
    wanted = {flag_name(f): [f.metadata["group"]] for f in dataclasses.fields(Config)}
    assert listed == wanted
    for command in commands:  # the examples are real commands
        args = [a.replace("flags/", f"{ROOT}/flags/") for a in command.split()[3:]]
        flags.FLAGS.unparse_flags()
        try:
            assert flags.FLAGS(["tpu_bo.main", *args]) == ["tpu_bo.main"]
            main.config_from_flags()
        finally:
            flags.FLAGS.unparse_flags()


def test_default_flags_give_the_default_config_and_flags_text_lists_every_flag():
    assert _parsed() == Config()
    text = main.flags_text()
    for name in ("accelerator", "sampler", "min_epochs", "reduction_factor", "storage"):
        assert f"--{name}=" in text
    assert "--nowait_for_lock" in text and "--download" in text


def test_flags_text_repeats_a_run(tmp_path):
    args = (
        "--sampler=tpe",
        "--prune=asha",
        "--min_epochs=2",
        "--reduction_factor=4",
        "--storage=sqlite:///study.db",
        "--study_name=mine",
        "--wait_for_lock",
        "--optimizer=adamw",
        "--param=learning_rate:log:1e-4:1e-2",
        "--fixed=dense_units=256",
        "--nodownload",
        "--xi=0.5",
    )
    config = _parsed(*args)
    assert (config.sampler, config.prune, config.min_epochs) == ("tpe", "asha", 2)
    assert (config.reduction_factor, config.storage, config.study_name) == (
        4,
        "sqlite:///study.db",
        "mine",
    )
    assert config.wait_for_lock and not config.download and config.xi == 0.5
    assert config.space.names == ["learning_rate"] and config.fixed == {"dense_units": 256}
    try:
        flags.FLAGS(["tpu_bo", *args])
        text = main.flags_text()
    finally:
        flags.FLAGS.unparse_flags()
    (tmp_path / "flags.txt").write_text(text)
    assert _parsed(f"--flagfile={tmp_path / 'flags.txt'}") == config


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--storage=study.db"], "storage"),
        (["--prune=median", "--epochs=2", "--min_epochs=3"], "min_epochs"),
        (["--param=learning_rate:gauss:0:1"], "param"),
        (["--fixed=dense_units"], "fixed"),
    ],
)
def test_bad_values_name_their_flag(args, flag):
    with pytest.raises(ConfigError) as info:
        _parsed(*args)
    assert info.value.flag == flag


@pytest.mark.parametrize(
    "arg", ["--reduction_factor=1", "--min_epochs=0", "--sampler=cmaes", "--prune=sometimes"]
)
def test_flag_bounds_and_choices_are_checked_while_parsing(arg):
    with pytest.raises(flags.IllegalFlagValueError, match=arg.split("=")[0].lstrip("-")):
        _parsed(arg)


def test_there_are_flagfiles():
    assert len(FLAGFILES) >= 3


@pytest.mark.parametrize("path", FLAGFILES, ids=lambda p: p.name)
def test_flagfile_opens_with_command_hardware_and_expectations(path: pathlib.Path):
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    text = "\n".join(header)
    assert f"--flagfile=flags/{path.name}" in text
    assert "Hardware:" in text and "Expected:" in text


@pytest.mark.parametrize("path", FLAGFILES, ids=lambda p: p.name)
def test_flagfile_parses_into_a_valid_config(path: pathlib.Path):
    assert _parsed(f"--flagfile={path}").total_trials >= 2


def test_cpu_smoke_flagfile_runs(tmp_path):
    run = run_cli(
        "--flagfile=flags/cpu_smoke.flags",
        "--init_points=1",
        "--n_iter=1",
        "--epochs=1",
        f"--output_dir={tmp_path}",
    )
    assert run.returncode == 0, run.stderr
    assert len(load_records(str(tmp_path))) == 2


def test_mnist_blog_cpu_flagfile_runs_on_two_replicas_with_several_steps_per_call(
    tmp_path, mnist_dir
):
    """The shipped flagfile, later flags overriding it: two CPU replicas, 8 steps a call."""
    run = run_cli(
        "--flagfile=flags/mnist_blog_cpu.flags",
        f"--data_dir={mnist_dir}",
        "--train_split=train[:10%]",
        "--test_split=",
        "--init_points=2",
        "--n_iter=1",
        "--cpu_replicas=2",
        "--steps_per_execution=8",
        f"--output_dir={tmp_path}",
    )
    assert run.returncode == 0, run.stderr
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["dataset"] == "mnist" and config["epochs"] == 1
    assert [p["name"] for p in config["space"]] == ["dropout_2", "learning_rate"]
    assert "MirroredStrategy with 2 replicas on CPU:0, CPU:1" in run.stdout  # the accelerator line
    assert "data: mnist train=6000 (46 steps of 128 per epoch)" in run.stdout
    records = journal(tmp_path)
    assert len({r.traces for r in records}) == 1  # no trace after the first trial
    assert all(r.steps == 46 and r.target > 0.8 for r in records)


def test_a_searched_batch_size_runs_one_program_and_pipeline_per_size(tmp_path):
    """``--param=batch_size:choice:...`` from the CLI: each trial steps through its own batch."""
    run = run_cli(
        "--param=batch_size:choice:32,64", "--param=learning_rate:log:1e-3:1e-2",
        "--parallel_trials=1", "--init_points=4", "--n_iter=1", "--epochs=1",
        "--model=tests.custom_models:tiny", "--final_epochs=1", "--seed=3",
        f"--output_dir={tmp_path}",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "steps per epoch follow the searched batch_size: 42 of 32, 21 of 64" in run.stdout
    records = journal(tmp_path)
    assert len(records) == 5 and {r.params["batch_size"] for r in records} == {32, 64}
    for r in records:
        assert r.status.value == "ok" and r.steps == 1350 // r.params["batch_size"], r
    final = json.loads((tmp_path / "final" / "final.json").read_text())
    assert final["status"] == "ok", final


def test_a_searched_batch_size_is_checked_against_the_replicas_in_one_sentence():
    from tpu_bo.data.pipeline import load_datasets
    from tpu_bo.device.accelerator import get_strategy

    config = Config(space=["batch_size:choice:32,33"]).validate()
    with pytest.raises(ConfigError) as caught:
        load_datasets(config, get_strategy("cpu", cpu_replicas=2))
    assert str(caught.value) == (
        "param: batch_size 33 does not divide by the 2 replicas; search multiples of 2."
    )
    with pytest.raises(ConfigError, match="^param: batch_size must take whole numbers"):
        Config(space=["batch_size:choice:32,0.5"]).validate()
