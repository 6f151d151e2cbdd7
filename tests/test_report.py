"""``segctl report`` on runs logged through the Tracker to a real MLflow server."""

from __future__ import annotations

import csv
import io
import json

import pytest
from typer.testing import CliRunner

from segctl.cli import app
from tests.servers import mlflow_server  # noqa: F401  (fixture)
from tests.trainer_runs import small_recipe
from trainer.tracking import Tracker, recipe_params, run_tags

runner = CliRunner()


@pytest.fixture(autouse=True)
def own_state_dir(tmp_path, monkeypatch):
    """The report index goes to a state directory of the test's own, not the user's."""
    monkeypatch.setenv("SEGCTL_HOME", str(tmp_path / "home"))


def _log_run(tmp_path, uri: str, name: str, seed: int, dataset: str, miou: dict[str, float],
             iterations: int, reference: dict | None) -> str:
    sections = {"name": name, "train": {"seed": seed, "batch_size": 2}}
    if dataset != "cityscapes":
        sections["data"] = {"dataset": dataset, "crop_size": [64, 64], "train_scale": [128, 64]}
        sections["eval"] = {"test_scale": [128, 64]}
        sections["tracking"] = {"uri": uri, "experiment": dataset}
    if reference:
        sections["reference"] = reference
    recipe = small_recipe(tmp_path / "data", uri, **sections)
    run_dir = tmp_path / f"{name}-{seed}-{len(miou)}"
    tracker = Tracker.for_recipe(run_dir, recipe)
    tracker.set_tags(run_tags(recipe, executor="local", job_id="1"))
    tracker.log_params(recipe_params(recipe))
    tracker.log_metrics({"loss": 1.0}, step=iterations)
    for key, value in miou.items():
        tracker.log_metrics({key: value}, step=iterations)
    tracker.close()
    return tracker.run_id


@pytest.fixture(scope="module")
def logged(mlflow_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    uri = mlflow_server.url
    ref = {"miou_ss": 76.2, "miou_ms_flip": 78.1, "source": "SegFormer Table 1"}
    a1 = _log_run(tmp, uri, "segformer-b0-city", 0, "cityscapes", {"mIoU": 70.0}, 12, ref)
    a2 = _log_run(tmp, uri, "segformer-b0-city", 0, "cityscapes",
                  {"mIoU": 74.5, "eval/ms_flip/mIoU": 77.0}, 12, ref)
    b = _log_run(tmp, uri, "segformer-b0-ade", 1, "ade20k",
                 {"mIoU": 30.0, "published/ss/mIoU": 37.1}, 12,
                 {"miou_ss": 37.4, "source": "SegFormer Table 1"})
    _log_run(tmp, uri, "segformer-b0-city-test", 2, "cityscapes", {"mIoU": 75.0}, 12,
             {"miou_ss": 77.5, "source": "test server", "split": "test"})
    return uri, a1, a2, b


def test_report_json_groups_runs_by_recipe(logged):
    uri, a1, a2, b = logged
    result = runner.invoke(app, ["report", "--format", "json", "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    rows = {(r["recipe"], r["kind"]): r for r in json.loads(result.output)}
    assert set(rows) == {("segformer-b0-city", "reproduced"), ("segformer-b0-ade", "reproduced"),
                         ("segformer-b0-ade", "published checkpoint"),
                         ("segformer-b0-city-test", "reproduced")}
    city = rows["segformer-b0-city", "reproduced"]
    # one row per segctl run id: both MLflow runs belong to the same segctl run
    assert city["runs"] == 2 and city["mlflow_run_id"] == a2  # the better run
    assert city["run_id"].startswith("segformer-b0-city-") and city["overrides"] == ""
    assert (city["published_ss"], city["reproduced_ss"], city["delta_ss"]) == (76.2, 74.5, -1.7)
    assert (city["published_ms_flip"], city["reproduced_ms_flip"]) == (78.1, 77.0)
    assert city["delta_ms_flip"] == -1.1
    assert (city["iterations_done"], city["iterations_planned"]) == (12, 12)
    assert city["gpu_hours"] >= 0 and city["link"] == f"{uri}/#/experiments/{_exp(city)}/runs/{a2}"
    ade = rows["segformer-b0-ade", "reproduced"]
    assert ade["dataset"] == "ade20k" and ade["published_ms_flip"] is None
    assert ade["reproduced_ms_flip"] is None and ade["delta_ss"] == -7.4
    published = rows["segformer-b0-ade", "published checkpoint"]
    assert (published["reproduced_ss"], published["delta_ss"]) == (37.1, -0.3)
    assert published["gpu_hours"] is None and published["core_hours"] is None  # nothing trained
    assert published["iterations_done"] is None
    server = rows["segformer-b0-city-test", "reproduced"]
    assert server["reference_split"] == "test" and server["published_ss"] == 77.5
    assert server["reproduced_ss"] == 75.0 and server["delta_ss"] is None  # never compared


def _exp(row) -> str:
    return row["link"].split("/experiments/")[1].split("/")[0]


def test_report_markdown_and_csv(logged):
    uri = logged[0]
    ids = {r["recipe"]: r["run_id"] for r in json.loads(runner.invoke(
        app, ["report", "--format", "json", "--tracking-uri", uri]).output)}
    md = runner.invoke(app, ["report", "--tracking-uri", uri])
    assert md.exit_code == 0, md.output
    assert md.output.index("## ade20k") < md.output.index("## cityscapes")
    assert "Overrides" not in md.output  # no run has any
    assert (f"| {ids['segformer-b0-city']} | reproduced | segformer_mit_b0 | 76.20 | 74.50 | "
            "-1.70 | 78.10 | 77.00 | -1.10 | 12/12 |") in md.output
    assert (f"| {ids['segformer-b0-ade']} | published checkpoint | segformer_mit_b0 | 37.40 | "
            "37.10 | -0.30 |") in md.output
    assert (f"| {ids['segformer-b0-city-test']} | reproduced | segformer_mit_b0 | 77.50 (test "
            "server) | 75.00 | – |") in md.output
    # best first within a dataset: 75.0 (test server run) before 74.5
    assert md.output.index(ids["segformer-b0-city-test"]) < md.output.index(
        f"| {ids['segformer-b0-city']} |")
    only = runner.invoke(app, ["report", "--dataset", "ade20k", "--format", "csv", "--tracking-uri", uri])
    rows = list(csv.DictReader(io.StringIO(only.output)))
    assert [(r["recipe"], r["kind"]) for r in rows] == [  # best first: 37.1 before 30.0
        ("segformer-b0-ade", "published checkpoint"), ("segformer-b0-ade", "reproduced")]
    bad = runner.invoke(app, ["report", "--format", "xml", "--tracking-uri", uri])
    assert bad.exit_code == 2


# --- one row per run (a recipe and its --set variants), best first, compute by device --------


def _log_variant(folder, uri: str, seed: int, miou: float, devices: tuple[int, int],
                 overrides: list[str]) -> str:
    from segctl.recipe import run_id
    from segctl.recipe.overrides import write_overrides
    from tests.trainer_runs import make_run_dir

    recipe = small_recipe(folder / "data", uri, name="quick", train={"seed": seed})
    run_dir = make_run_dir(folder / run_id(recipe), recipe)
    write_overrides(run_dir, overrides)
    tracker = Tracker.for_recipe(run_dir, recipe, system_metrics=False, devices=devices)
    tracker.set_tags(run_tags(recipe, executor="local", job_id="1", gpus=devices[0],
                              run_dir=run_dir))
    tracker.log_params(recipe_params(recipe))
    tracker.log_metrics({"loss": 1.0, "mIoU": miou}, step=12)
    tracker.close()
    return run_id(recipe)


def test_report_has_one_row_per_run_with_overrides_best_first(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    plain = _log_variant(tmp_path, uri, 0, 50.0, (0, 4), [])
    best = _log_variant(tmp_path, uri, 1, 60.0, (0, 4), ["train.seed=1"])
    gpu = _log_variant(tmp_path, uri, 2, 55.0, (2, 32), ["optim.lr=0.01", "train.seed=2"])
    result = runner.invoke(app, ["report", "--format", "json", "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["run_id"] for r in rows] == [best, gpu, plain]  # by mIoU, descending
    assert {r["recipe"] for r in rows} == {"quick"}
    assert [r["overrides"] for r in rows] == ["train.seed=1", "optim.lr=0.01 train.seed=2", ""]
    by_id = {r["run_id"]: r for r in rows}
    for cpu in (plain, best):  # CPU runs: core-hours, no GPU-hours
        assert by_id[cpu]["gpu_hours"] is None and by_id[cpu]["core_hours"] is not None
    assert by_id[gpu]["gpu_hours"] is not None and by_id[gpu]["core_hours"] is None

    md = runner.invoke(app, ["report", "--tracking-uri", uri]).output
    assert "| Run | Overrides | Weights |" in md and "| Compute |" in md
    lines = [line for line in md.splitlines() if line.startswith("| quick-")]
    assert [line.split(" | ")[0][2:] for line in lines] == [best, gpu, plain]
    assert "| train.seed=1 |" in lines[0] and "core×h" in lines[0] and "GPU×h" not in lines[0]
    assert "GPU×h" in lines[1] and "core×h" not in lines[1]
    assert lines[2].startswith(f"| {plain} | – | reproduced |")

    from mlflow import MlflowClient

    tags = {r.data.tags["segctl.run_id"]: r.data.tags
            for r in MlflowClient(uri).search_runs(
                [e.experiment_id for e in MlflowClient(uri).search_experiments()])}
    assert tags[plain]["segctl.gpus"] == "0" and "segctl.overrides" not in tags[plain]
    assert tags[gpu]["segctl.gpus"] == "2"
    assert tags[gpu]["segctl.overrides"] == "optim.lr=0.01 train.seed=2"


def test_an_index_written_before_tags_were_kept_gains_them(tmp_path):
    import sqlite3

    from segctl.report_index import ReportIndex

    path = tmp_path / "report-index.db"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE runs (uri TEXT NOT NULL, run_id TEXT NOT NULL, experiment_id TEXT NOT NULL,
            run_name TEXT, start_ms INTEGER, recipe_hash TEXT NOT NULL, dataset TEXT,
            params TEXT NOT NULL, metrics TEXT NOT NULL, PRIMARY KEY (uri, run_id));
        INSERT INTO runs VALUES ('u', 'r1', '0', 'n', 1, 'h', 'cityscapes', '{}', '{}');
    """)
    old.commit()
    old.close()
    with ReportIndex.open(path) as index:
        (run,) = index.runs("u")
    assert run.run_id == "r1" and run.tags == {"segctl.recipe_hash": "h"}
