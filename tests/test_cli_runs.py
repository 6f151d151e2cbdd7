"""Reading many runs of one recipe: a recipe name picks its latest run for the commands that
read one run (``logs``, ``eval``), ``status NAME`` shows them all, each run carries its
overrides (registry, ``status``, MLflow, ``report``), ``report`` has a row per run with the
compute it used, and ``logs`` shows the latest job of either kind or lists recent runs.

Every command runs through the real Typer app; the end-to-end test trains on the local
executor into an embedded MLflow store (``segctl_env``).
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from segctl.cli import app
from segctl.io.home import segctl_home
from segctl.registry import Registry, RunRecord
from tests.trainer_runs import frame_job_yaml

runner = CliRunner()

#: A two-iteration job on the one-frame root: fill in ``root``.
RECIPE = frame_job_yaml("frame", "{root}", max_iters=2, val_interval=2, checkpoint_interval=2)
SECRET = "hunter2-not-for-eyes"


def add_run(env: Path, run_id: str, *, job_at: float | None = None,
            overrides: tuple[str, ...] = ()) -> Path:
    """Register a finished run (with one COMPLETED training job submitted at ``job_at`` when
    given) whose directory holds an empty job log."""
    registry = Registry(segctl_home())
    run_dir = env / "runs" / run_id
    (run_dir / "jobs").mkdir(parents=True)
    registry.add_run(RunRecord(run_id, run_id.rsplit("-", 1)[0], "h", str(run_dir), "x.yaml",
                               time.time(), None, overrides))
    if job_at is not None:
        row = registry.begin_job(run_id, "train", "local", str(run_dir / "jobs"), None)
        registry.submitted(row, "1")
        registry.set_state(row, "COMPLETED")
        with sqlite3.connect(registry.path) as db:
            db.execute("UPDATE jobs SET submitted_at = ? WHERE id = ?", (job_at, row))
    return run_dir


def test_a_name_picks_its_latest_run_for_reading_and_status_shows_all(segctl_env):
    now = time.time()
    add_run(segctl_env, "twin-11111111", job_at=now + 50)  # registered first, active last
    add_run(segctl_env, "twin-22222222", job_at=now + 10, overrides=("optim.lr=0.01",))
    add_run(segctl_env, "twin-big-33333333", job_at=now + 90)  # another recipe name

    logs = runner.invoke(app, ["logs", "twin"])
    assert logs.exit_code == 0, logs.output
    assert ("twin matches 2 runs; using the latest, twin-11111111 (others: twin-22222222)"
            in logs.stderr)
    assert "twin-11111111/jobs" in logs.stdout and "twin-22222222" not in logs.stdout

    # an id prefix is not a name: refused, with the runs it matches
    prefix = runner.invoke(app, ["logs", "twin-"])
    assert prefix.exit_code == 2
    assert all(run in prefix.output for run in ("twin-11111111", "twin-22222222",
                                                "twin-big-33333333"))
    # destructive commands keep refusing a shared name without --all
    for command in (["cancel", "twin"], ["forget", "twin"]):
        refused = runner.invoke(app, command)
        assert refused.exit_code == 2 and "matches 2 runs" in refused.output
        assert "--all" in refused.output and "twin-big" not in refused.output
    assert len(Registry(segctl_home()).runs()) == 3

    rows = json.loads(runner.invoke(app, ["status", "twin", "--json"]).output)
    assert [r["run_id"] for r in rows] == ["twin-11111111", "twin-22222222"]
    assert [r["overrides"] for r in rows] == [[], ["optim.lr=0.01"]]
    table = runner.invoke(app, ["status", "twin"]).output.splitlines()
    assert table[0].split()[-1] == "OVERRIDES"
    assert table[1].split()[-1] == "-" and table[2].split()[-1] == "optim.lr=0.01"
    plain = runner.invoke(app, ["status", "twin-big"]).output
    assert "OVERRIDES" not in plain  # no column where no run has overrides


def test_logs_without_a_run_lists_recent_runs(segctl_env):
    empty = runner.invoke(app, ["logs"])
    assert empty.exit_code == 0 and "no runs yet" in empty.output
    now = time.time()
    add_run(segctl_env, "old-11111111", job_at=now - 3600)
    add_run(segctl_env, "new-22222222", job_at=now)
    add_run(segctl_env, "idle-33333333")
    result = runner.invoke(app, ["logs"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["RUN", "NAME", "STATE", "LATEST", "JOB", "SUBMITTED"]
    assert [line.split()[0] for line in lines[1:4]] == [
        "idle-33333333", "new-22222222", "old-11111111"]  # latest activity first
    assert lines[2].split()[1:4] == ["new", "COMPLETED", "train"]
    assert "NO JOB" in lines[1]
    assert "segctl logs RUN" in result.output and "--kind" in result.output
    assert runner.invoke(app, ["logs", "new", "--kind", "both"]).exit_code == 2


def test_logs_shows_the_latest_job_of_either_kind_unless_told(segctl_env):
    run_dir = add_run(segctl_env, "solo-11111111", job_at=time.time())
    registry = Registry(segctl_home())
    row = registry.begin_job("solo-11111111", "eval", "local", str(run_dir / "eval-jobs"), "ss")
    registry.submitted(row, "2")
    registry.set_state(row, "COMPLETED")
    latest = runner.invoke(app, ["logs", "solo"])
    assert latest.exit_code == 0, latest.output
    assert "solo-11111111: evaluation (ss) job 2" in latest.stderr
    assert "--kind train for the latest train job" in latest.stderr
    assert "eval-jobs/2_0_log.out" in latest.stdout
    train = runner.invoke(app, ["logs", "solo", "--kind", "train"])
    assert "solo-11111111: training job 1" in train.stderr and "jobs/1_0_log.out" in train.stdout
    assert "the latest;" not in train.stderr


def test_a_registry_of_an_older_segctl_gains_the_overrides_column(segctl_env):
    home = segctl_home()
    home.mkdir(parents=True)
    with sqlite3.connect(home / "registry.db") as db:
        db.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, name TEXT NOT NULL, "
                   "recipe_hash TEXT NOT NULL, run_dir TEXT NOT NULL, source TEXT NOT NULL, "
                   "created_at REAL NOT NULL)")
        db.execute("INSERT INTO runs VALUES ('old-11111111', 'old', 'h', '/r', 'x.yaml', 1.0)")
    registry = Registry(home)
    registry.add_run(RunRecord("new-22222222", "new", "h", "/n", "x.yaml", 2.0, "sw",
                               ("train.seed=1",)))
    registry.add_run(RunRecord("old-11111111", "old", "h", "/r", "x.yaml", 3.0, None,
                               ("optim.lr=0.1",)))  # an older row gains what it lacked
    old, new = registry.runs()
    assert (old.run_id, old.created_at, old.sweep, old.overrides) == (
        "old-11111111", 1.0, None, ("optim.lr=0.1",))
    assert (new.sweep, new.overrides) == ("sw", ("train.seed=1",))
    registry.add_run(RunRecord("new-22222222", "new", "h", "/n", "x.yaml", 4.0, None, ()))
    assert registry.runs()[1].overrides == ("train.seed=1",)  # a run keeps its first list


def test_overrides_are_the_result_fields_that_differ_with_secrets_hidden():
    from segctl.recipe import load_recipe
    from segctl.recipe.overrides import differences, shortened

    base = load_recipe("recipes/quickstart.yaml" if Path("recipes").is_dir()
                       else Path(__file__).parents[1] / "recipes" / "quickstart.yaml")
    variant = load_recipe(base.source, [
        "optim.lr=0.01", "schedule.max_iters=600", "data.num_workers=3", "cluster.nodes=2",
        f"model.init_checkpoint=https://me:{SECRET}@weights.example/w.pth",
        f"data.storage_options.secret={SECRET}", "train.seed=0",
    ])
    items = differences(base.recipe, variant.recipe)
    # placement, worker counts and storage options do not make another run: left out;
    # seed 0 is the file's own value
    assert items == ["model.init_checkpoint=https://me:***@weights.example/w.pth",
                     "optim.lr=0.01", "schedule.max_iters=600"]
    assert shortened(items[1:]) == "optim.lr=0.01 schedule.max_iters=600"
    assert shortened(items, limit=40) == (
        "model.init_checkpoint=https://me:***@weights.example/… (+2 more)")
    assert differences(base.recipe, base.recipe) == []


@pytest.mark.slow
def test_variants_of_one_recipe_read_well(segctl_env, cityscapes_frame_root, monkeypatch):
    """A recipe and a --set variant trained locally: status, logs, eval and report."""
    from mlflow import MlflowClient

    recipe = segctl_env / "frame.yaml"
    recipe.write_text(RECIPE.format(root=cityscapes_frame_root))
    first = runner.invoke(app, ["submit", str(recipe), "--cluster", "local", "--wait"])
    assert first.exit_code == 0, first.output
    variant = runner.invoke(app, [
        "submit", str(recipe), "--cluster", "local", "--wait", "--set", "train.seed=7",
        "--set", f"data.storage_options.secret={SECRET}", "--set", "data.num_workers=1",
    ])
    assert variant.exit_code == 0, variant.output

    rows = json.loads(runner.invoke(app, ["status", "frame", "--json"]).output)
    assert len(rows) == 2 and {r["state"] for r in rows} == {"COMPLETED"}
    by_overrides = {tuple(r["overrides"]): r["run_id"] for r in rows}
    assert set(by_overrides) == {(), ("train.seed=7",)}
    plain, seeded = by_overrides[()], by_overrides[("train.seed=7",)]
    table = runner.invoke(app, ["status", "frame"]).output
    assert "OVERRIDES" in table and "train.seed=7" in table

    # the latest run of the name; its latest job (training); then an evaluation of it
    logs = runner.invoke(app, ["logs", "frame"])
    assert logs.exit_code == 0, logs.output
    assert f"frame matches 2 runs; using the latest, {seeded} (others: {plain})" in logs.stderr
    assert f"{seeded}: training job" in logs.stderr and f"runs/{seeded}/jobs" in logs.stdout
    # a later job of a run with a literal secret needs its variable exported again
    monkeypatch.setenv(f"SEGCTL_SECRET_{seeded[-8:].upper()}_DATA_SECRET", SECRET)
    evaluated = runner.invoke(app, ["eval", "frame", "--wait"])
    assert evaluated.exit_code == 0, evaluated.output
    assert f"using the latest, {seeded}" in evaluated.stderr
    assert "submitted evaluation" in evaluated.stdout and seeded in evaluated.stdout
    latest = runner.invoke(app, ["logs", "frame"])
    assert f"{seeded}: evaluation" in latest.stderr and "--kind train" in latest.stderr
    assert "mIoU" in latest.stdout  # the evaluation job's table
    train = runner.invoke(app, ["logs", "frame", "--kind", "train"])
    assert f"{seeded}: training job" in train.stderr
    listing = runner.invoke(app, ["logs"]).output.splitlines()
    assert listing[1].split()[:4] == [seeded, "frame", "COMPLETED", "eval"]

    # the report: a row per run, best first, overrides, core-hours (no GPU here)
    report = runner.invoke(app, ["report", "--format", "json"])
    assert report.exit_code == 0, report.output
    reported = json.loads(report.output)
    assert {r["run_id"] for r in reported} == {plain, seeded}
    scores = [r["reproduced_ss"] for r in reported]
    assert scores == sorted(scores, reverse=True)
    assert {r["run_id"]: r["overrides"] for r in reported} == {plain: "", seeded: "train.seed=7"}
    for row in reported:
        assert row["gpu_hours"] is None and row["core_hours"] > 0, row
    md = runner.invoke(app, ["report"]).output
    assert "core×h" in md and "GPU×h" not in md and "| train.seed=7 |" in md

    uri = f"sqlite:///{segctl_env / 'mlflow.db'}"
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    tags = {r.data.tags["segctl.run_id"]: r.data.tags for r in runs}
    assert tags[plain]["segctl.gpus"] == "0" and tags[seeded]["segctl.gpus"] == "0"
    assert tags[seeded]["segctl.overrides"] == "train.seed=7"
    assert "segctl.overrides" not in tags[plain]

    # the literal secret is nowhere a reader looks
    seen = [table, logs.stderr, report.output, md,
            runner.invoke(app, ["status", "--json"]).output,
            (segctl_env / "runs" / seeded / "overrides.json").read_text(),
            json.dumps([[r.data.tags, r.data.params] for r in runs])]
    with sqlite3.connect(segctl_home() / "registry.db") as db:
        seen.append(json.dumps(db.execute("SELECT * FROM runs").fetchall()))
    assert not [text for text in seen if SECRET in text]


def test_the_status_table_shows_the_time_left_and_the_published_curve(capsys):
    """ETA comes from the run's own seconds per iteration (``progress.json``'s
    ``eta_seconds``), shown while the job is active; the mIoU column carries the published
    figure at the same point where the run is compared with a published curve."""
    from segctl.cli.status import _render

    base = {"sweep": None, "overrides": [], "reason": None, "loss": 0.5, "requeues": 0,
            "nodes": 1, "elapsed_seconds": 60.0, "max_iters": 100}
    _render([
        dict(base, run_id="a-11111111", state="RUNNING", iteration=40, miou=41.2,
             published="41.20 (published 43.00 at 40)", eta_seconds=3725.0),
        dict(base, run_id="b-22222222", state="COMPLETED", iteration=100, miou=50.0,
             published=None, eta_seconds=0.0),
    ])
    header, running, done = capsys.readouterr().out.splitlines()
    assert header.split()[-1] == "ETA"
    assert running.endswith("1:02:05") and "41.20 (published 43.00 at 40)" in running
    assert done.split()[-1] == "-" and " 50.00 " in done
