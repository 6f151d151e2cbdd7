"""Time to submit a 16-run sweep (a 4x4 grid) as one Slurm job array.

Needs the development cluster (``eval "$(slurm/dev-cluster.sh up)"``). Measures the wall time
of ``segctl submit RECIPE --sweep ... --sweep ...`` (planning 16 runs, creating their run
directories and registry rows, one sbatch call) against planning alone (``--dry-run``) in the
same run, then cancels the jobs it submitted. Prints seconds.

    python benchmarks/bench_sweep.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    segctl = str(Path(sys.executable).with_name("segctl"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        from trainer.data.synthetic import make_synthetic_cityscapes

        data = make_synthetic_cityscapes(root / "data", n_train=2, n_val=2, size=(64, 128))
        env = {**os.environ, "SEGCTL_HOME": str(root / "home"), "SEGCTL_RUNS_DIR": str(root / "runs"),
               "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
        args = [segctl, "submit", str(REPO / "recipes" / "quickstart.yaml"), "--set", f"data.root={data}",
                "--cluster", "slurm", "--partition", "dev", "--gpus-per-node", "0",
                "--sweep", "optim.lr=1e-4,2e-4,4e-4,8e-4", "--sweep", "train.seed=0,1,2,3"]
        start = time.perf_counter()
        subprocess.run([*args, "--dry-run"], env=env, check=True, capture_output=True, cwd=root)
        planning = time.perf_counter() - start
        start = time.perf_counter()
        out = subprocess.run(args, env=env, check=True, capture_output=True, text=True, cwd=root)
        submitting = time.perf_counter() - start
        status = json.loads(subprocess.run([segctl, "status", "--json"], env=env, check=True,
                                           capture_output=True, text=True, cwd=root).stdout)
        subprocess.run([segctl, "cancel", *[row["run_id"] for row in status]], env=env,
                       check=True, capture_output=True, cwd=root)
    arrays = {row["job_id"].split("_")[0] for row in status}
    print(out.stdout.splitlines()[0])
    print(f"planning 16 runs (--dry-run):          {planning:.2f} s")
    print(f"submitting 16 runs as one job array:  {submitting:.2f} s ({len(status)} runs, {len(arrays)} array)")


if __name__ == "__main__":
    main()
