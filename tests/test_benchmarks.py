"""The benchmarks cannot rot: ``python -m benchmarks --quick`` runs every one of them and prints
one table of finite figures; and the sweep's dataset check is remembered between sweeps."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.__main__ import BENCHMARKS
from benchmarks.table import format_table, row

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.server  # the staging benchmark starts a moto S3 server on 127.0.0.1
def test_quick_run_reports_every_benchmark_with_finite_figures(tmp_path):
    out = tmp_path / "rows.json"
    env = {k: v for k, v in os.environ.items()
           if k not in ("SEGCTL_HOME", "SEGCTL_RUNS_DIR", "MLFLOW_TRACKING_URI")}
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--json", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    table = done.stdout
    assert table.startswith("machine: ") and "torch " in table and "threads" in table
    report = json.loads(out.read_text())
    assert report["machine"]["torch"] and report["machine"]["cores"] >= 1
    rows = report["rows"]
    for name in BENCHMARKS:
        short = name.removeprefix("bench_")
        mine = [r for r in rows if r["benchmark"] == short]
        assert mine, f"{short} reported no rows"
        for r in mine:
            for field in ("figure", "reference_figure", "ratio"):
                assert isinstance(r[field], float) and math.isfinite(r[field]), (short, r)
            assert r["unit"] and r["reference"], r
            assert r["name"] in table  # every row is in the printed table


def test_table_puts_each_figure_beside_its_reference_and_ratio():
    rows = [row("sweep", "submit 64 runs", 2.0, "s", "--dry-run", 4.0, target="<= 3 s",
                passed=True),
            row("confusion", "update", 1.0, "ms", "bincount", 0.0)]
    assert rows[0].ratio == 0.5 and math.isnan(rows[1].ratio)
    text = format_table(rows, None).splitlines()
    assert "0.50x" in text[2] and "yes" in text[2] and "--dry-run" in text[2]
    assert text[3].split()[-1] == "-"  # no ratio against a zero reference


def test_sweep_preflight_is_remembered_until_the_dataset_changes(tmp_path, monkeypatch):
    from segctl.recipe import load_recipe
    from segctl.submission import preflight_remembered
    from trainer.data.synthetic import make_synthetic_cityscapes

    monkeypatch.setenv("SEGCTL_HOME", str(tmp_path / "home"))
    data = make_synthetic_cityscapes(tmp_path / "data", n_train=2, n_val=2, size=(32, 64))
    loaded = load_recipe(REPO / "recipes" / "quickstart.yaml", [f"data.root={data}"])
    assert preflight_remembered(loaded, loaded.recipe) == []
    assert len(json.loads((tmp_path / "home" / "preflight.json").read_text())) == 1

    assert preflight_remembered(loaded, loaded.recipe) == []  # remembered
    labels = sorted((Path(data) / "gtFine" / "val").rglob("*_labelTrainIds.png"))
    labels[0].unlink()  # its image now has no label
    issues = preflight_remembered(loaded, loaded.recipe)
    assert issues and "has no label file" in issues[0].message, "checked again, not remembered"
    assert len(json.loads((tmp_path / "home" / "preflight.json").read_text())) == 1
