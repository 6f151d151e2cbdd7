"""How fast ``segctl status`` answers for 200 runs (target: well under a second).

Builds a registry of 200 runs in a temporary SEGCTL_HOME (150 finished, 50 whose local jobs
are still asked about), each with a progress.json, then times ``segctl status`` and
``segctl status --json`` as real processes, against ``segctl --help`` in the same run as the
reference for process start-up. Prints the median of several runs, in seconds.

    python benchmarks/bench_status.py
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from segctl.registry import Registry, RunRecord

RUNS = 200
REPEATS = 7


def populate(root: Path) -> None:
    registry = Registry(root / "home")
    for i in range(RUNS):
        run_id = f"bench{i:03d}-{i:08x}"
        run_dir = root / "runs" / run_id
        run_dir.mkdir(parents=True)
        (run_dir / "progress.json").write_text(
            json.dumps({"iteration": i, "max_iters": RUNS, "loss": 0.5, "miou": 40.0, "updated_at": time.time()})
        )
        sweep = f"sweep{i // 20}" if i % 3 == 0 else None
        registry.add_run(RunRecord(run_id, f"bench{i:03d}", "0" * 64, str(run_dir), "bench.yaml", time.time(), sweep))
        row = registry.begin_job(run_id, "train", "local", str(run_dir / "jobs"), None)
        registry.submitted(row, str(4_000_000 + i))  # no such process: judged from files
        if i < 150:
            registry.set_state(row, "COMPLETED")


def median_seconds(args: list[str], env: dict[str, str]) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        subprocess.run(args, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    segctl = str(Path(sys.executable).with_name("segctl"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        populate(root)
        env = {**os.environ, "SEGCTL_HOME": str(root / "home"), "SEGCTL_RUNS_DIR": str(root / "runs")}
        reference = median_seconds([segctl, "--help"], env)
        table = median_seconds([segctl, "status"], env)
        as_json = median_seconds([segctl, "status", "--json"], env)
    print(f"segctl --help (process start-up reference): {reference:.3f} s")
    print(f"segctl status, {RUNS} runs:        {table:.3f} s ({table / reference:.1f}x --help)")
    print(f"segctl status --json, {RUNS} runs: {as_json:.3f} s ({as_json / reference:.1f}x --help)")


if __name__ == "__main__":
    main()
