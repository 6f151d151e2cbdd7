"""A run against its published training curve, for real: the log is served by an HTTP server
on 127.0.0.1, fetched into the weights cache at submission and compared by the job while it
trains (learning rate, loss, mIoU), and what the comparison found reaches ``progress.json``,
``segctl status``, MLflow and ``segctl report``.

The published logs are made from a first run of the same recipe (training is deterministic):
one it matches, one it falls behind, and one whose learning rates differ.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from segctl.cli import app
from segctl.recipe.rundir import RunDir
from tests.servers import range_server  # noqa: F401  (fixture)
from tests.trainer_runs import frame_job_yaml

runner = CliRunner()

MAX_ITERS, VAL_INTERVAL = 4, 2


def _recipe(root: Path, log_url: str | None, name: str = "curve") -> str:
    """A four-iteration recipe; ``name`` gives each its own run id (a reference section does
    not: it changes nothing of the training)."""
    tail = ""
    if log_url:
        tail = (f"reference:\n  miou_ss: 50.0\n  source: a published table\n"
                f"  log: {log_url}\n")
    return frame_job_yaml(name, root, crop_size="[64, 128]", max_iters=MAX_ITERS,
                          val_interval=VAL_INTERVAL, checkpoint_interval=MAX_ITERS, tail=tail)


def _journal_series(run_dir: Path) -> dict[str, dict[int, float]]:
    """Metric -> {step: value}, as the run's tracking journal recorded them."""
    series: dict[str, dict[int, float]] = {}
    for line in RunDir(run_dir).tracking_journal.read_text().splitlines():
        record = json.loads(line)
        if record.get("op") == "metrics":
            for key, value, _, step in record["items"]:
                series.setdefault(key, {})[int(step)] = float(value)
    return series


def _mmcv_log(series, *, loss_scale=1.0, lr_scale=1.0, miou_shift=0.0) -> str:
    """An mmcv ``*.log.json`` of ``series``: floats rounded to 5 decimals, mIoU as a fraction,
    each val line after the train line of its iteration, with ``iter`` the validation
    images (1)."""
    lines = [{"env_info": "made for a test", "seed": 0}]
    for step in sorted(series["loss"]):
        lines.append({"mode": "train", "epoch": 1, "iter": step,
                      "lr": round(series["lr"][step] * lr_scale, 5),
                      "loss": round(series["loss"][step] * loss_scale, 5), "time": 0.5})
        if step in series.get("mIoU", {}):
            lines.append({"mode": "val", "epoch": 1, "iter": 1,
                          "mIoU": round((series["mIoU"][step] + miou_shift) / 100, 5)})
    return "\n".join(json.dumps(line) for line in lines) + "\n"


def _submit(env: Path, monkeypatch, name: str, text: str):
    """Submit ``text`` and wait; returns (result, run dir)."""
    monkeypatch.setenv("SEGCTL_RUNS_DIR", str(env / f"runs-{name}"))  # to find its run dir
    recipe = env / f"{name}.yaml"
    recipe.write_text(text)
    result = runner.invoke(app, ["submit", str(recipe), "--wait", "--from-scratch"])
    (run_dir,) = (env / f"runs-{name}").iterdir()
    return result, run_dir


@pytest.mark.slow  # four short training jobs
def test_a_run_is_compared_with_its_published_curve(segctl_env, cityscapes_frame_root,
                                                    range_server, monkeypatch):
    plain, plain_dir = _submit(segctl_env, monkeypatch, "plain", _recipe(cityscapes_frame_root, None))
    assert plain.exit_code == 0, plain.output
    series = _journal_series(plain_dir)
    assert set(series["loss"]) >= {1, 2, 3, 4} and set(series["mIoU"]) == {2, 4}, series.keys()

    logs = {"same": _mmcv_log(series),
            "behind": _mmcv_log(series, loss_scale=0.5, miou_shift=10.0),
            "lr": _mmcv_log(series, lr_scale=3.0)}
    for name, text in logs.items():
        (range_server.root / f"{name}.log.json").write_text(text)

    # the same curve: compared, never behind
    same, same_dir = _submit(segctl_env, monkeypatch, "same", _recipe(
        cityscapes_frame_root, f"{range_server.url}/same.log.json", "curve-same"))
    assert same.exit_code == 0, same.output
    assert "reference.log: same.log.json" in same.output and "2 evaluations" in same.output
    progress = RunDir(same_dir).read_progress()
    assert progress["published"]["iteration"] == MAX_ITERS
    assert math.isclose(progress["published"]["gap"], 0.0, abs_tol=1e-3)
    assert progress["behind"] is None and progress["fell_behind"] is False
    row = _status_row(same_dir.name)
    assert row["published"].startswith(f"{progress['miou']:.2f} (published ")
    assert "behind" not in row["published"]
    tags, metrics = _mlflow(segctl_env, same_dir)
    assert tags["segctl.behind_published"] == "false"
    assert tags["segctl.published_curve"] == f"{range_server.url}/same.log.json"
    assert metrics["published_curve/mIoU"] == pytest.approx(series["mIoU"][MAX_ITERS], abs=1e-3)

    # a curve it falls behind: flagged in progress, status, MLflow and the log; it finishes
    behind, behind_dir = _submit(segctl_env, monkeypatch, "behind", _recipe(
        cityscapes_frame_root, f"{range_server.url}/behind.log.json", "curve-behind"))
    assert behind.exit_code == 0, behind.output
    progress = RunDir(behind_dir).read_progress()
    assert progress["phase"] == "done" and progress["fell_behind"] is True
    assert "mIoU" in progress["behind"] and "loss" in progress["behind"]
    assert progress["published"]["gap"] == pytest.approx(-10.0, abs=1e-3)
    assert _status_row(behind_dir.name)["published"].endswith(", behind")
    tags, _ = _mlflow(segctl_env, behind_dir)
    assert tags["segctl.behind_published"] == "true"
    job_log = runner.invoke(app, ["logs", behind_dir.name]).output
    assert "behind the published curve" in job_log and "training goes on" in job_log

    # the published schedule with other learning rates: a configuration error, the job stops
    wrong, wrong_dir = _submit(segctl_env, monkeypatch, "lr", _recipe(
        cityscapes_frame_root, f"{range_server.url}/lr.log.json", "curve-lr"))
    assert wrong.exit_code == 1, wrong.output
    progress = RunDir(wrong_dir).read_progress()
    assert progress["phase"] == "failed"
    assert "ScheduleMismatchError" in progress["reason"]
    assert "learning rate at iteration 1" in progress["reason"]
    assert "the schedule differs from the source's" in progress["reason"]


def _status_row(run_id: str) -> dict:
    result = runner.invoke(app, ["status", run_id, "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    return row


def _mlflow(env: Path, run_dir: Path) -> tuple[dict, dict]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{env / 'mlflow.db'}")
    run = client.get_run(RunDir(run_dir).mlflow_run_id.read_text().strip())
    return run.data.tags, run.data.metrics


def test_weights_fetch_gets_the_published_log_and_a_missing_one_is_not_fatal(
        segctl_env, cityscapes_frame_root, range_server):
    (range_server.root / "fetched.log.json").write_text(
        '{"mode": "train", "epoch": 1, "iter": 2, "lr": 0.01, "loss": 1.5, "time": 0.3}\n'
        '{"mode": "val", "epoch": 1, "iter": 1, "mIoU": 0.25}\n')
    outputs = {}
    for name in ("fetched", "missing"):
        recipe = segctl_env / f"{name}.yaml"
        recipe.write_text(_recipe(cityscapes_frame_root, f"{range_server.url}/{name}.log.json"))
        result = runner.invoke(app, ["weights", "fetch", "--quiet", str(recipe)])
        assert result.exit_code == 0, result.output
        outputs[name] = result.output
    assert ("reference.log: fetched.log.json" in outputs["fetched"]
            and "1 training lines to iteration 2, 1 evaluations, final mIoU 25.00"
            in outputs["fetched"]), outputs["fetched"]
    assert "reference.log not fetched (" in outputs["missing"], outputs["missing"]
