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


def test_readme_fine_tuning_toml_is_a_valid_config(tmp_path):
    """The fine-tuning TOML of the README parses, validates and says what the text says."""
    from mfcalc.config import RunConfig

    blocks = re.findall(r"```toml\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    block = next(b for b in blocks if "init_from" in b)
    path = tmp_path / "ft.toml"
    path.write_text(block)
    cfg = RunConfig.from_toml(str(path)).validate()
    assert cfg.train.init_from == "default" and cfg.train.new_head == ["caspt2=cc", "dft_g16=dft"]
    assert [f.name for f in cfg.fidelities] == ["dft_g16", "caspt2"]
    assert cfg.fidelities[0].forces_unit == "hartree/bohr"
    assert cfg.train.lr_schedule == "cosine" and cfg.train.max_minutes == 10  # what the benchmark found
    assert cfg.train.train_params == "branch" and cfg.model.branch_blocks == 1
