"""The code's shape: small modules and functions, and a test file for every module."""

from __future__ import annotations

import ast

from tests.conftest import ROOT

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules():
    return sorted([*ROOT.glob("tpu_bo/*.py"), *ROOT.glob("bench/*.py"), *ROOT.glob("colab/*.py")])


def test_no_module_over_400_lines_and_no_function_over_60():
    too_long = []
    for path in _modules():
        text = path.read_text()
        name = path.relative_to(ROOT)
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name}: {lines} lines")
    assert not too_long, too_long


def test_every_module_has_a_test_file():
    tests = {p.name for p in (ROOT / "tests").glob("test_*.py")}
    missing = [
        p.name
        for p in ROOT.glob("tpu_bo/*.py")
        if p.name != "__init__.py" and f"test_{p.name}" not in tests
    ]
    assert not missing, f"no tests/test_<module>.py for {missing}"
