"""How fast ``segctl status`` and ``segctl report`` answer for 2,000 runs (target: report under
a second, from the index it keeps).

Builds in a temporary directory what segctl leaves behind after 2,000 runs: registry rows
(three quarters finished, the rest local jobs that status still asks about), run directories
(``recipe.json``, ``progress.json``, ``mlflow_run_id``), and 2,000 MLflow runs in an embedded
SQLite store holding what a training job logs (the flattened recipe as params, the
``segctl.*`` tags, loss, mIoU, ``iterations_done``, ``gpu_hours``; some runs an ms+flip
evaluation or a published-checkpoint score), for 400 recipes of 5 seeds over two datasets,
one run ending every 10 minutes until now.
Then it prints, in seconds:

- ``status``: the in-process summaries of every run, and the CLI (median of several processes);
- ``report`` from the index (the store unchanged since the index was built: MLflow is not
  read), in process and the CLI;
- ``report`` by scanning MLflow (what it did before it kept an index: every run read, in
  process; and the CLI with ``--rebuild-index``, which reads every run into the index),
  measured in the same run, and the ratio of the two;
- ``report`` after one more run was logged (only new and changed runs are read).

    python -m benchmarks.bench_control_plane [--quick] [--runs 2000] [--repeats 5]

``--quick``: 20 runs, 1 repeat. The default in ``python -m benchmarks`` is 500 runs (writing
2,000 MLflow runs takes minutes on a loaded machine); ``--runs 2000`` gives the target's size.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python benchmarks/bench_control_plane.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.table import Row, row, script_main

NAME = "control_plane"
RECIPES_PER_SEED = 5


def recipe_for(index: int, root: Path, uri: str):
    """The resolved recipe of run ``index``: recipe ``index // 5``, seed ``index % 5``."""
    from segctl.recipe import Recipe, resolve

    number, seed = divmod(index, RECIPES_PER_SEED)
    dataset = "cityscapes" if number % 2 == 0 else "ade20k"
    data = {"dataset": dataset, "root": str(root / dataset), "crop_size": [512, 1024]}
    if dataset == "ade20k":
        data["crop_size"] = [512, 512]
    return resolve(Recipe.model_validate({
        "name": f"bench-{dataset}-{number:04d}",
        "data": data,
        "model": {"name": "segformer_mit_b0", "init_checkpoint": "https://example.org/mit_b0.pth"},
        "optim": {"lr": 6e-5},
        "schedule": {"max_iters": 160000, "val_interval": 16000, "checkpoint_interval": 16000},
        "train": {"batch_size": 2, "seed": seed},
        "eval": {"ms_flip": number % 7 == 0},
        "tracking": {"uri": uri, "experiment": dataset},
        "reference": {"miou_ss": 76.2, "miou_ms_flip": 78.1, "source": "SegFormer Table 1"},
    }))


def populate(root: Path, runs: int) -> str:
    """Registry, run directories and MLflow runs of ``runs`` runs under ``root``; returns the
    tracking URI."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    from segctl.io.tracking_store import sqlite_uri
    from segctl.recipe import recipe_hash, run_id
    from segctl.registry import Registry, RunRecord
    from trainer.tracking import recipe_params, run_tags

    uri = sqlite_uri(root / "mlflow.db")
    client = MlflowClient(tracking_uri=uri)
    experiments = {name: client.create_experiment(name, (root / "mlartifacts").as_uri())
                   for name in ("cityscapes", "ade20k")}
    registry = Registry(root / "home")
    now = time.time()
    started = time.perf_counter()
    for i in range(runs):
        recipe = recipe_for(i, root, uri)
        rid = run_id(recipe)
        run_dir = root / "runs" / f"{rid}-{i % RECIPES_PER_SEED}"
        run_dir.mkdir(parents=True)
        (run_dir / "recipe.json").write_text(recipe.model_dump_json(indent=2))
        miou = 70.0 + (i * 7919 % 1000) / 100.0
        (run_dir / "progress.json").write_text(json.dumps({
            "phase": "done", "iteration": 160000, "max_iters": 160000, "loss": 0.2,
            "miou": miou, "updated_at": now}))
        tags = run_tags(recipe, executor="local", job_id=str(4_000_000 + i))
        tags.pop("segctl.git_commit", None)
        ms = int((now - (runs - i) * 600) * 1000)  # one run every 10 minutes until now
        mlflow_run = client.create_run(experiments[recipe.data.dataset], run_name=rid,
                                       tags=tags, start_time=ms - 3_600_000)
        metrics = [Metric("loss", 0.2, ms, 160000), Metric("mIoU", miou, ms, 160000),
                   Metric("iterations_done", 160000.0, ms, 160000),
                   Metric("gpu_hours", 48.0, ms, 160000)]
        if i % 3 == 0:
            metrics.append(Metric("eval/ms_flip/mIoU", miou + 1.5, ms, 160000))
        if i % 50 == 0:
            metrics.append(Metric("published/ss/mIoU", 76.0, ms, 0))
        client.log_batch(mlflow_run.info.run_id, metrics=metrics,
                         params=[Param(k, v) for k, v in recipe_params(recipe).items()])
        client.set_terminated(mlflow_run.info.run_id, end_time=ms)
        (run_dir / "mlflow_run_id").write_text(mlflow_run.info.run_id + "\n")
        registry.add_run(RunRecord(run_dir.name, recipe.name, recipe_hash(recipe), str(run_dir),
                                   "bench.yaml", now, None))
        row = registry.begin_job(run_dir.name, "train", "local", str(run_dir / "jobs"), None)
        registry.submitted(row, str(4_000_000 + i))  # no such process: judged from files
        if i % 4:
            registry.set_state(row, "COMPLETED")
        if (i + 1) % 500 == 0:
            print(f"  {i + 1} runs written ({time.perf_counter() - started:.0f} s)",
                  file=sys.stderr)
    return uri


def scan(uri: str) -> list:
    """The report as ``segctl report`` made it before it kept an index: every segctl run of
    every experiment read from MLflow, then grouped."""
    from mlflow import MlflowClient

    from segctl.tracking_query import all_pages, rows_of

    client = MlflowClient(tracking_uri=uri)
    runs = []
    for experiment in all_pages(client.search_experiments):
        runs += all_pages(lambda **kw: client.search_runs(
            [experiment.experiment_id], filter_string="tags.`segctl.recipe_hash` LIKE '%'", **kw))
    return rows_of(uri, runs)


def seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall seconds of ``repeats`` calls of ``fn``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cli(args: list[str], env: dict[str, str], cwd: Path) -> Callable[[], None]:
    segctl = str(Path(sys.executable).with_name("segctl"))

    def run() -> None:
        subprocess.run([segctl, *args], env=env, cwd=cwd, check=True, capture_output=True)

    return run


class _restored:
    """Put the environment variables of ``saved`` back (or remove them) on exit."""

    def __init__(self, saved: dict[str, str | None]) -> None:
        self.saved = saved

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def rows(quick: bool = False, runs: int | None = None, repeats: int | None = None) -> list[Row]:
    """status and report, in process and as CLI processes, each against its reference
    (seconds, medians)."""
    import argparse

    options = argparse.Namespace(runs=runs or (20 if quick else 500),
                                 repeats=repeats or (1 if quick else 5))
    saved = {k: os.environ.get(k) for k in ("SEGCTL_HOME", "SEGCTL_RUNS_DIR",
                                            "MLFLOW_TRACKING_URI")}
    with tempfile.TemporaryDirectory() as tmp, _restored(saved):
        root = Path(tmp)
        env = {**os.environ, "SEGCTL_HOME": str(root / "home"),
               "SEGCTL_RUNS_DIR": str(root / "runs")}
        os.environ.update({k: env[k] for k in ("SEGCTL_HOME", "SEGCTL_RUNS_DIR")})
        print(f"writing {options.runs} runs (registry, run directories, MLflow) ...",
              file=sys.stderr)
        uri = populate(root, options.runs)
        env["MLFLOW_TRACKING_URI"] = os.environ["MLFLOW_TRACKING_URI"] = uri

        from segctl.cli.common import registry
        from segctl.tracking_query import collect
        from segctl.status import summaries

        reg = registry()
        status_in = seconds(lambda: summaries(reg, reg.runs()), options.repeats)
        status_cli = seconds(cli(["status"], env, root), options.repeats)

        scanned = scan(uri)  # also warms MLflow's imports
        scan_in = seconds(lambda: scan(uri), max(1, options.repeats // 2))
        indexed = collect(uri)  # builds the index in $SEGCTL_HOME
        assert indexed == scanned, "the index gives another report than MLflow"
        index_in = seconds(lambda: collect(uri), options.repeats)
        index_cli = seconds(cli(["report"], env, root), options.repeats)
        report_rows = len(indexed)
        if quick:  # the CLI scans import MLflow: seconds each
            return [
                row(NAME, f"status in process, {options.runs} runs", status_in, "s",
                    "segctl status (CLI)", status_cli, notes="quick: 1 repeat"),
                row(NAME, f"report from the index, in process, {options.runs} runs", index_in,
                    "s", "report scanning MLflow, in process", scan_in, notes="quick: 1 repeat"),
                row(NAME, f"segctl report from the index (CLI), {options.runs} runs", index_cli,
                    "s", "segctl status (CLI)", status_cli, notes="quick: 1 repeat"),
            ]
        scan_cli = seconds(cli(["report", "--rebuild-index"], env, root),
                           max(1, options.repeats // 2))

        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name("cityscapes").experiment_id
        extra = client.create_run(experiment, tags={"segctl.recipe_hash": "f" * 64})
        client.log_metric(extra.info.run_id, "mIoU", 71.0)
        client.set_terminated(extra.info.run_id)
        changed_cli = seconds(cli(["report"], env, root), 1)  # reads the new run, then indexes it


    size = f"{options.runs} runs ({report_rows} report rows)"
    notes = f"median of {options.repeats}"
    return [
        row(NAME, f"status in process, {size}", status_in, "s", "segctl status (CLI)",
            status_cli, notes=notes),
        row(NAME, f"report from the index, in process, {size}", index_in, "s",
            "report scanning MLflow, in process", scan_in, notes=notes),
        row(NAME, f"segctl report from the index (CLI), {size}", index_cli, "s",
            "segctl report --rebuild-index (CLI, a scan)", scan_cli, target="< 1 s",
            passed=index_cli < 1.0, notes=notes),
        row(NAME, f"segctl report after one new run (CLI), {size}", changed_cli, "s",
            "segctl report from the index (CLI)", index_cli, notes="once"),
    ]


def _arguments(parser) -> None:
    parser.add_argument("--runs", type=int, default=None, help="default 500 (--quick 20)")
    parser.add_argument("--repeats", type=int, default=None, help="default 5 (--quick 1)")


if __name__ == "__main__":
    script_main(rows, __doc__, _arguments)
