"""The README's Python example runs as written, from a fresh checkout, with the shipped model."""

from __future__ import annotations

import re
from pathlib import Path

import symusic

ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_python_example_runs(tmp_path, monkeypatch, capsys) -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    assert blocks, "the README has no Python example"
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)  # the example writes continued.mid into the current folder
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    continued = symusic.Score(str(tmp_path / "continued.mid"))
    prompt = symusic.Score(str(ROOT / "examples" / "twinkle.mid"))
    assert continued.note_num() > prompt.note_num()
    printed = capsys.readouterr().out
    assert "NoteEvent(" in printed
