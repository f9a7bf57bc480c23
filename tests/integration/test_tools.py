"""The benchmark tools run end to end on a tiny budget (their numbers are not checked here)."""

import importlib.util
import json
import sys

from conftest import REPO


def load_tool(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_mfl_benchmark_prints_the_table_and_writes_json(tmp_path, capsys):
    tool = load_tool("mfl_benchmark")
    out = tmp_path / "mfl.json"
    rc = tool.main(["--rows", "SF-cc/E", "MF-dft/EF-cc/E@10%", "SF-cc/E@10%", "--splits", "smiles", "--seeds", "2",
                    "--epochs", "1", "--n-features", "6", "--n-sensitivities", "4", "--n-atom-layers", "1",
                    "--json", str(out)])
    assert rc == 0
    table = capsys.readouterr().out
    assert "MF-dft/EF-cc/E@10%" in table and "test molecules unseen" in table
    doc = json.loads(out.read_text())
    runs = doc["results"]["smiles"]["MF-dft/EF-cc/E@10%"]
    assert len(runs) == 2 and all(r["forces_rmse"] is not None for r in runs)  # CCSD(T) forces scored


def test_mfl_benchmark_matrix_covers_the_issue_rows():
    names = {r.name for r in load_tool("mfl_benchmark").matrix()}
    assert {"SF-dft/E", "SF-dft/EF", "MF-xtb/E-dft/E", "MF-xtb/EF-dft/E", "MF-xtb/EF-dft/EF", "SF-cc/E",
            "MF-dft/E-cc/E", "MF-dft/EF-cc/E", "MF-xtb/EF-dft/EF-cc/E"} <= names
    assert any("@10%" in n for n in names) and any("@25%" in n for n in names)
