"""Time to submit a 64-run sweep (a 4x4x4 grid) as one Slurm job array, with a warm MLflow
store (target: <= 3 s from the command's start to all runs accepted).

Measures the wall time of ``segctl submit RECIPE --sweep ... --sweep ... --sweep ...`` as a
process (planning 64 runs, the dataset preflight, creating their run directories and registry
rows, one sbatch call for the array) against planning alone (``--dry-run`` of the same grid)
in the same run, and against ``segctl --help`` (the process start-up floor). "Warm" is a
user's second sweep: the embedded MLflow store already exists and an earlier sweep over the same dataset was submitted (a 2-run grid, untimed), so what need not
happen per sweep (creating the store, importing torch for a dataset check already passed:
:func:`segctl.submission.preflight_remembered`) does not.

Where Slurm answers (``eval "$(slurm/dev-cluster.sh up)"``; this benchmark never starts or
stops it) the jobs go to partition ``dev`` and are cancelled afterwards. Elsewhere a stand-in
``sbatch`` on ``PATH`` accepts each submission at once (printing a job id as sbatch does), so
the figure is everything segctl does up to the scheduler's answer; the row's notes say which.

    python -m benchmarks.bench_sweep [--quick] [--runs-per-axis 4]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python benchmarks/bench_sweep.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.table import Row, row, script_main

NAME = "sweep"
REPO = Path(__file__).resolve().parents[1]
TARGET_S = 3.0
STAND_IN_SBATCH = """#!/bin/sh
# stand-in for sbatch (bench_sweep.py): accepts the job at once, as sbatch prints it
echo "Submitted batch job 4242"
"""


def _grid(per_axis: int) -> list[str]:
    """``--sweep`` options of a per_axis^3 grid over learning rate, seed and batch size."""
    lrs = ",".join(f"{1e-4 * 2 ** i:g}" for i in range(per_axis))
    seeds = ",".join(str(i) for i in range(per_axis))
    batches = ",".join(str(i + 1) for i in range(per_axis))
    return ["--sweep", f"optim.lr={lrs}", "--sweep", f"train.seed={seeds}",
            "--sweep", f"train.batch_size={batches}"]


def _timed(args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str]:
    started = time.perf_counter()
    out = subprocess.run(args, env=env, check=True, capture_output=True, text=True, cwd=cwd)
    return time.perf_counter() - started, out.stdout


def rows(quick: bool = False, runs_per_axis: int | None = None) -> list[Row]:
    """Submitting ``runs_per_axis``^3 runs (default 64; quick: 8) against its ``--dry-run``, s."""
    from segctl.executors import slurm_available
    from segctl.io.tracking_store import sqlite_uri
    from trainer.data.synthetic import make_synthetic_cityscapes

    per_axis = runs_per_axis or (2 if quick else 4)
    runs = per_axis ** 3
    segctl = str(Path(sys.executable).with_name("segctl"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = make_synthetic_cityscapes(root / "data", n_train=2, n_val=2, size=(64, 128))
        uri = sqlite_uri(root / "mlflow.db")
        env = {**os.environ, "SEGCTL_HOME": str(root / "home"),
               "SEGCTL_RUNS_DIR": str(root / "runs"), "MLFLOW_TRACKING_URI": uri}
        real = slurm_available()
        if not real:
            (root / "bin").mkdir()
            sbatch = root / "bin" / "sbatch"
            sbatch.write_text(STAND_IN_SBATCH)
            sbatch.chmod(0o755)
            env["PATH"] = f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        base = [segctl, "submit", str(REPO / "recipes" / "quickstart.yaml"),
                "--set", f"data.root={data}", "--cluster", "slurm", "--partition", "dev",
                "--gpus-per-node", "0"]
        # an earlier sweep over the same dataset (untimed): it creates the MLflow store
        # (:func:`segctl.io.tracking_store.ensure_store`) and passes the dataset check
        _timed([*base, "--sweep", "optim.lr=1e-5,2e-5"], env, root)
        startup = min(_timed([segctl, "--help"], env, root)[0] for _ in range(2))
        planning = None if quick else _timed([*base, *_grid(per_axis), "--dry-run"], env, root)[0]
        submitting, stdout = _timed([*base, *_grid(per_axis)], env, root)
        if real:
            status = json.loads(subprocess.run(
                [segctl, "status", "--json"], env=env, check=True, capture_output=True,
                text=True, cwd=root).stdout)
            subprocess.run([segctl, "cancel", *[r["run_id"] for r in status]], env=env,
                           check=False, capture_output=True, cwd=root)
    accepted = stdout.count(" job ")
    if accepted < runs:
        raise RuntimeError(f"{accepted} of {runs} runs were accepted:\n{stdout}")
    where = ("dev Slurm cluster (partition dev)" if real else
             "no Slurm controller here: a stand-in sbatch accepted the array at once "
             "(everything up to the scheduler's answer)")
    name = f"submit {runs} runs as one job array (warm store)"
    passed = submitting <= TARGET_S if runs >= 64 else None
    out = [row(NAME, name, submitting, "s", "segctl --help (process start-up)", startup,
               target=f"<= {TARGET_S:g} s", passed=passed, notes=where)]
    if planning is not None:
        out.append(row(NAME, name, submitting, "s", f"--dry-run of the same {runs}-run grid",
                       planning, notes="the dry-run checks the dataset every time (imports torch)"))
    return out


def _arguments(parser) -> None:
    parser.add_argument("--runs-per-axis", type=int, default=None,
                        help="grid of N^3 runs (default 4: 64 runs; --quick 2)")


if __name__ == "__main__":
    script_main(rows, __doc__, _arguments)
