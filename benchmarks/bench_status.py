"""How fast ``segctl status`` answers for 200 runs (target: well under a second).

Builds a registry of 200 runs in a temporary SEGCTL_HOME (150 finished, 50 whose local jobs
are still asked about), each with a progress.json, then times ``segctl status`` and
``segctl status --json`` as real processes, against ``segctl --help`` in the same run as the
reference for process start-up. Prints the median of several runs, in seconds.
``--quick``: 20 runs, 1 repeat.

    python -m benchmarks.bench_status [--quick]
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

if __package__ in (None, ""):  # run as a file: python benchmarks/bench_status.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.table import Row, row, script_main
from segctl.registry import Registry, RunRecord

NAME = "status"
RUNS = 200
REPEATS = 7


def populate(root: Path, runs: int = RUNS) -> None:
    """A registry of ``runs`` runs under ``root`` (three quarters finished), with progress files."""
    registry = Registry(root / "home")
    for i in range(runs):
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
        if i < runs * 3 // 4:
            registry.set_state(row, "COMPLETED")


def median_seconds(args: list[str], env: dict[str, str], repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(args, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def rows(quick: bool = False) -> list[Row]:
    """``segctl status`` and ``status --json`` processes against ``segctl --help``, seconds."""
    runs, repeats = (20, 1) if quick else (RUNS, REPEATS)
    segctl = str(Path(sys.executable).with_name("segctl"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        populate(root, runs)
        env = {**os.environ, "SEGCTL_HOME": str(root / "home"), "SEGCTL_RUNS_DIR": str(root / "runs")}
        reference = median_seconds([segctl, "--help"], env, repeats)
        table = median_seconds([segctl, "status"], env, repeats)
        as_json = median_seconds([segctl, "status", "--json"], env, repeats)
    notes = f"processes, median of {repeats}"
    return [row(NAME, f"segctl status, {runs} runs", table, "s", "segctl --help (start-up)",
                reference, target="< 1 s", passed=table < 1.0, notes=notes),
            row(NAME, f"segctl status --json, {runs} runs", as_json, "s",
                "segctl --help (start-up)", reference, target="< 1 s", passed=as_json < 1.0,
                notes=notes)]


if __name__ == "__main__":
    script_main(rows, __doc__)
