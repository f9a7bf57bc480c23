"""The README's examples run as written (with the test's own trained model as run/model.pt)."""

import re
import shutil

from conftest import REPO


def python_blocks(text: str):
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_md_example_runs_as_written(trained_model, tmp_path, monkeypatch, capsys):
    blocks = [b for b in python_blocks((REPO / "README.md").read_text()) if "Langevin" in b]
    assert len(blocks) == 1
    code = blocks[0]
    assert len([line for line in code.strip().splitlines() if line.strip()]) <= 12
    (tmp_path / "run").mkdir()
    shutil.copy(trained_model, tmp_path / "run" / "model.pt")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "('xtb', 'dft', 'cc')" in out
