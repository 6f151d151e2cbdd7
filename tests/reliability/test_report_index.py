"""``segctl report`` answers from the index it keeps, and the index follows MLflow: new runs,
changed runs, deleted runs, a deleted index and a replaced store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from segctl.cli import app
from segctl.tracking_query import collect, refresh, rows_of
from segctl.report_index import INDEX_FILE, ReportIndex
from tests.trainer_runs import small_recipe
from trainer.tracking import Tracker, ensure_store, recipe_params, run_tags

runner = CliRunner()
SEGCTL = str(Path(sys.executable).with_name("segctl"))


def _log(folder: Path, uri: str, name: str, miou: float, **metrics: float) -> str:
    recipe = small_recipe(folder / "data", uri, name=name,
                          reference={"miou_ss": 70.0, "source": "a table"})
    tracker = Tracker.for_recipe(folder / name, recipe, system_metrics=False)
    tracker.set_tags(run_tags(recipe, executor="local", job_id="1"))
    tracker.log_params(recipe_params(recipe))
    tracker.log_metrics({"loss": 1.0, "mIoU": miou, **metrics}, step=12)
    tracker.close()
    return tracker.run_id


def _report(*args: str) -> list[dict]:
    result = runner.invoke(app, ["report", "--format", "json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _by_recipe(rows: list[dict]) -> dict[str, dict]:
    return {row["recipe"]: row for row in rows}


@pytest.mark.slow
def test_runs_logged_or_changed_after_the_index_was_built_appear(segctl_env):
    uri = f"sqlite:///{segctl_env / 'mlflow.db'}"
    ensure_store(uri)
    first = _log(segctl_env, uri, "first", 60.0)
    assert set(_by_recipe(_report())) == {"first"}
    index_file = segctl_env / "home" / INDEX_FILE
    assert index_file.is_file()
    with ReportIndex.open() as index:
        assert refresh(index, uri) == "none"  # nothing written since: MLflow is not asked

    later = _log(segctl_env, uri, "later", 65.0)
    rows = _by_recipe(_report())
    assert set(rows) == {"first", "later"} and rows["later"]["mlflow_run_id"] == later
    assert rows["later"]["reproduced_ss"] == 65.0

    # an evaluation reopens the first run and logs a better score: the row follows
    recipe = small_recipe(segctl_env / "data", uri, name="first",
                          reference={"miou_ss": 70.0, "source": "a table"})
    again = Tracker.for_recipe(segctl_env / "first", recipe, system_metrics=False)
    assert again.run_id == first
    again.log_metrics({"eval/ss/mIoU": 71.5}, step=12)
    again.close()
    rows = _by_recipe(_report())
    assert rows["first"]["reproduced_ss"] == 71.5 and rows["first"]["delta_ss"] == 1.5

    # a deleted run leaves the report
    MlflowClient(uri).delete_run(later)
    assert set(_by_recipe(_report())) == {"first"}

    # what the index answers is what a full read of MLflow gives
    assert collect(uri) == collect(uri, rebuild=True, index_path=":memory:")


@pytest.mark.slow
def test_a_run_changed_without_ending_is_read_again_once_sync_marks_it(segctl_env):
    """Records delivered to a finished run leave its end time alone; ``segctl sync`` marks
    the run it delivered to, and the next report reads it again."""
    uri = f"sqlite:///{segctl_env / 'mlflow.db'}"
    ensure_store(uri)
    run_id = _log(segctl_env, uri, "quiet", 50.0)
    assert _by_recipe(_report())["quiet"]["reproduced_ss"] == 50.0
    MlflowClient(uri).log_metric(run_id, "eval/ss/mIoU", 55.0, step=12)  # no status change
    with ReportIndex.open() as index:
        index.mark_stale(uri, [run_id])
    assert _by_recipe(_report())["quiet"]["reproduced_ss"] == 55.0


@pytest.mark.slow
def test_a_deleted_index_is_rebuilt_and_gives_the_same_report(segctl_env):
    uri = f"sqlite:///{segctl_env / 'mlflow.db'}"
    ensure_store(uri)
    for i in range(3):
        _log(segctl_env, uri, f"run{i}", 50.0 + i, **{"eval/ms_flip/mIoU": 52.0 + i})
    before = runner.invoke(app, ["report"])
    assert before.exit_code == 0, before.output
    index_file = segctl_env / "home" / INDEX_FILE
    index_file.unlink()
    after = runner.invoke(app, ["report"])
    assert after.exit_code == 0 and after.output == before.output
    assert index_file.is_file()
    index_file.write_bytes(b"not a database at all")  # a damaged index is replaced, too
    damaged = runner.invoke(app, ["report"])
    assert damaged.exit_code == 0 and damaged.output == before.output
    with ReportIndex.open() as index:
        assert len(index.runs(uri)) == 3
        assert rows_of(uri, index.runs(uri)) == collect(uri, index_path=":memory:")


@pytest.mark.slow
def test_a_replaced_store_is_read_whole(segctl_env):
    """The embedded store deleted and made again (new runs in it): the index notices that the
    experiments are not the ones it knew and forgets the runs of the old store. Each step is a
    process of its own, as in life (MLflow keeps a store open per process)."""
    uri = f"sqlite:///{segctl_env / 'mlflow.db'}"
    ensure_store(uri)
    _log(segctl_env, uri, "old", 40.0)

    def report() -> list[dict]:
        done = subprocess.run([SEGCTL, "report", "--format", "json", "--tracking-uri", uri],
                              capture_output=True, text=True, timeout=180, cwd=segctl_env)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    assert set(_by_recipe(report())) == {"old"}
    (segctl_env / "mlflow.db").unlink()
    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})\n"
              "from pathlib import Path\n"
              "from tests.reliability.test_report_index import _log\n"
              f"_log(Path({str(segctl_env / 'new')!r}), {uri!r}, 'new', 45.0)\n")
    logged = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=180, cwd=segctl_env)
    assert logged.returncode == 0, logged.stderr[-3000:]
    assert set(_by_recipe(report())) == {"new"}
