"""The documentation, as a reader copies from it: ``README.md`` and every page of ``docs/``.

Every flag of ``python -m tpu_bo.main --helpfull`` is in ``docs/flags.md``, in the table row of
its ``--help`` heading; every
``python -m tpu_bo.main ...`` command of a ``sh``/``bash`` block parses into a valid ``Config``;
every ``python -m`` names a module that exists; every relative link of the README reaches a file
(and, with an ``#anchor``, a heading of it). Links between the pages of ``docs/`` are checked by
``mkdocs build --strict`` (``.ci/run``). Nothing here trains: seconds in all.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib
import re
import shlex

import pytest
from absl import flags as absl_flags

import tpu_bo.main as cli
from tests.conftest import ROOT, run_cli
from tpu_bo.config import FLAG_GROUPS, Config, flag_name

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
# A fenced sh/bash block, possibly indented (inside a list item); group 2 is its body.
SHELL_BLOCK = re.compile(r"^( *)```(?:sh|bash)[ \t]*\n(.*?)^\1```", re.MULTILINE | re.DOTALL)
PYTHON_M = re.compile(r"python\s+-m\s+([A-Za-z_][\w.]*)")
OUR_PACKAGES = ("tpu_bo", "bench")
OTHER_MODULES = {"pytest"}  # `python -m` of a module that is not ours, named on purpose
SHELL_OPERATORS = {"&&", "||", "|", ";", "&"}
CLI = ["python", "-m", "tpu_bo.main"]


def _name(path: pathlib.Path) -> str:
    return str(path.relative_to(ROOT))


def _shell_lines(path: pathlib.Path) -> list[tuple[int, str]]:
    """Each command of the page's sh/bash blocks, continuation lines joined, with its line."""
    text = path.read_text()
    commands = []
    for block in SHELL_BLOCK.finditer(text):
        first = text.count("\n", 0, block.start(2)) + 1
        pending, start = "", first
        for offset, line in enumerate(block.group(2).splitlines()):
            if not pending:
                start = first + offset
            line = line.strip()
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            commands.append((start, pending + line))
            pending = ""
    return commands


def _cli_commands() -> list[pytest.param]:
    """The arguments of every ``python -m tpu_bo.main`` command in a sh/bash block."""
    found = []
    for path in PAGES:
        for line, command in _shell_lines(path):
            if "python -m tpu_bo.main" not in command:
                continue
            words = shlex.split(command, comments=True)
            at = next(i for i in range(len(words) - 2) if words[i : i + 3] == CLI)
            args = []
            for word in words[at + 3 :]:
                if word in SHELL_OPERATORS:
                    break
                args.append(word)
            found.append(pytest.param(args, id=f"{_name(path)}:{line}"))
    return found


def _resolved(args: list[str]) -> list[str] | None:
    """``args`` with a relative ``--flagfile`` resolved against the repository, or ``None``
    for a command that needs a file a reader writes first (``--space_file``)."""
    out = []
    for arg in args:
        if arg.startswith("--space_file="):
            return None  # the reader's own space.json: no such file in the repository
        if arg.startswith("--flagfile="):
            path = pathlib.Path(arg.partition("=")[2])
            path = path if path.is_absolute() else ROOT / path
            assert path.is_file(), f"{arg}: no such flagfile in the repository"
            arg = f"--flagfile={path}"
        out.append(arg)
    return out


def test_the_docs_show_commands_to_check():
    assert len(_cli_commands()) >= 10


@pytest.mark.parametrize("args", _cli_commands())
def test_every_documented_command_parses_into_a_valid_config(args):
    resolved = _resolved(args)
    if resolved is None:
        pytest.skip("needs the reader's own --space_file")
    absl_flags.FLAGS.unparse_flags()
    try:
        rest = absl_flags.FLAGS(["prog", *resolved])  # an unknown flag or a bad value raises
        assert rest == ["prog"], f"arguments that are not flags: {rest[1:]}"
        cli.config_from_flags()  # validated: a ConfigError fails the test
    finally:
        absl_flags.FLAGS.unparse_flags()


def test_every_python_dash_m_names_a_module_that_exists():
    named = {
        (module, _name(path)) for path in PAGES for module in PYTHON_M.findall(path.read_text())
    }
    assert any(module == "tpu_bo.main" for module, _ in named)
    missing = []
    for module, page in sorted(named):
        if module.split(".")[0] not in OUR_PACKAGES:
            ok = module in OTHER_MODULES
        else:
            ok = importlib.util.find_spec(module) is not None
        if not ok:
            missing.append(f"{page}: python -m {module}")
    assert not missing, f"no such module: {missing}"


def _github_anchors(path: pathlib.Path) -> set[str]:
    """The anchors GitHub gives the headings of ``path`` (outside code blocks)."""
    anchors, fenced = set(), False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        heading = re.match(r"#{1,6} (.*)", line)
        if heading and not fenced:
            text = heading.group(1).strip().lower().replace("`", "")
            anchors.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return anchors


def test_every_relative_link_of_the_readme_reaches_a_file_and_heading():
    links = re.findall(r"\]\(([^)\s]+)\)", README.read_text())
    relative = [link for link in links if not re.match(r"[a-z]+:", link)]
    assert len(relative) >= 12
    broken = []
    for link in relative:
        target, _, anchor = link.partition("#")
        path = (README.parent / target).resolve() if target else README
        if not path.exists():
            broken.append(f"{link}: no such file")
        elif anchor and anchor not in _github_anchors(path):
            broken.append(f"{link}: no heading with that anchor")
    assert not broken, f"broken links in README.md: {broken}"


def test_every_flag_in_helpfull_is_documented_in_the_flags_page():
    run = run_cli("--helpfull")
    section = run.stdout.split("tpu_bo/main.py:")[1].split("\n\n")[0]
    names = re.findall(r"^  --(?:\[no\])?(\w+)", section, flags=re.MULTILINE)
    assert len(names) >= 30
    page = (ROOT / "docs" / "flags.md").read_text()
    missing = [n for n in names if f"`--{n}`" not in page and f"`--[no]{n}`" not in page]
    assert not missing, f"flags missing from docs/flags.md: {missing}"


def _outside_parentheses(text: str) -> str:
    kept, depth = [], 0
    for char in text:
        depth += char == "("
        if not depth:
            kept.append(char)
        depth -= char == ")" and depth > 0
    return "".join(kept)


def test_the_flags_page_lists_every_flag_in_the_row_of_its_help_heading():
    page = (ROOT / "docs" / "flags.md").read_text()
    rows = dict(re.findall(r"^\| ([a-z][a-z ]*) \| (.*) \|$", page, flags=re.MULTILINE))
    rows.pop("group", None)  # the table's own header
    rows = {group: _outside_parentheses(row) for group, row in rows.items()}  # not the asides
    assert list(rows)[: len(FLAG_GROUPS)] == list(FLAG_GROUPS)
    misplaced = []
    for field in dataclasses.fields(Config):
        name = flag_name(field)
        found = [g for g in FLAG_GROUPS if re.search(rf"`--(\[no\])?{name}`", rows[g])]
        if found != [field.metadata["group"]]:
            misplaced.append(f"--{name}: in {found or 'no row'}, not {field.metadata['group']}")
    assert not misplaced, misplaced
