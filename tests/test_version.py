"""One version number: pyproject.toml's, as the C API, the Python package and CMake report it."""

import re
from pathlib import Path

import sage_edge
from sage_edge import _engine

ROOT = Path(__file__).resolve().parent.parent


def pyproject_version() -> str:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r'^version = "([^"]+)"$', text, re.MULTILINE)
    assert match, "pyproject.toml has no version line"
    return match.group(1)


def test_engine_and_package_report_the_pyproject_version():
    assert _engine.version() == sage_edge.__version__ == pyproject_version()
