"""One rule decides what is secret (:mod:`segctl.recipe.secrets`): a recipe holding a literal
storage-option secret and URLs with credentials goes through every output that shows recipe
values or URLs, and none of them shows a secret."""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml
from typer.testing import CliRunner

from segctl.cli import app
from segctl.recipe import recipe_hash, run_id
from segctl.recipe.rundir import RunDir
from segctl.registry import Registry, RunRecord
from tests.trainer_runs import small_recipe
from trainer.tracking import recipe_params, redact, run_tags

KEY = "AKIAEVERYWHERE7Q3ZK2"
SECRET = "s3cr3t-everywhere-wJalrXUtnFEMI"
WEIGHTS_PASSWORD = "wpass-everywhere-d41d8cd98f"
TRACKING_PASSWORD = "tpass-everywhere-9f4d0b1c"
PIP_PASSWORD = "ppass-everywhere-5e6f7a8b"
SECRETS = (KEY, SECRET, WEIGHTS_PASSWORD, TRACKING_PASSWORD, PIP_PASSWORD)
runner = CliRunner()


def _assert_hidden(where: str, text: str) -> None:
    for secret in SECRETS:
        at = text.find(secret)
        assert at < 0, f"{secret} shown by {where}: ...{text[max(0, at - 200):at + 60]}..."


def test_no_output_shows_a_secret_of_the_recipe(segctl_env):
    recipe = small_recipe(
        segctl_env / "data", f"http://tracker:{TRACKING_PASSWORD}@127.0.0.1:1",
        name="everywhere",
        data={"root": "s3://frames/cityscapes",
              "storage_options": {"endpoint_url": "http://127.0.0.1:1", "key": KEY,
                                  "secret": SECRET}},
        model={"init_checkpoint": f"https://reader:{WEIGHTS_PASSWORD}@127.0.0.1:1/w.pth"},
        tracking={"system_metrics": False},
    )
    path = segctl_env / "everywhere.yaml"
    path.write_text(yaml.safe_dump(recipe.model_dump(mode="json", exclude_defaults=True),
                                   sort_keys=False))
    profile = segctl_env / "site.yaml"  # a site's setup line with a credentialed index URL
    profile.write_text(yaml.safe_dump({"partition": "gpu", "setup": [
        f"export PIP_INDEX_URL=https://pip:{PIP_PASSWORD}@index.example/simple"]}))
    shown: dict[str, str] = {}

    # MLflow: params, tags and the recipe artifact
    shown["tracking params"] = json.dumps(recipe_params(recipe))
    shown["tracking tags"] = json.dumps(run_tags(recipe, executor="local", job_id="1"))
    shown["recipe artifact"] = json.dumps(redact(recipe.model_dump(mode="json")))
    assert json.loads(shown["tracking params"])["data.storage_options.secret"] == "***"

    # segctl recipes show
    show = runner.invoke(app, ["recipes", "show", str(path)])
    assert show.exit_code == 0, show.output
    shown["recipes show"] = show.output
    assert '"secret": "***"' in show.output and "reader:***@127.0.0.1" in show.output

    # submit --dry-run: the plan, and the sbatch script it renders
    for cluster in ("local", "slurm"):
        dry = runner.invoke(app, ["submit", str(path), "--dry-run", "--cluster", cluster,
                                  "--profile", str(profile)])
        assert dry.exit_code == 0, dry.output
        shown[f"submit --dry-run --cluster {cluster}"] = dry.output
    assert "#SBATCH" in shown["submit --dry-run --cluster slurm"]
    assert "https://pip:***@index.example" in shown["submit --dry-run --cluster slurm"]

    # segctl status: a reason naming a URL with its credentials, as a job may write it
    rid = run_id(recipe)
    layout = RunDir(segctl_env / "runs" / rid)
    layout.path.mkdir(parents=True)
    layout.progress.write_text(json.dumps({
        "phase": "failed", "iteration": 0, "max_iters": 12,
        "reason": f"OSError: cannot read {recipe.model.init_checkpoint}"}))
    Registry(segctl_env / "home").add_run(RunRecord(
        rid, recipe.name, recipe_hash(recipe), str(layout.path), str(path), time.time()))
    for args in (["status"], ["status", "--json"]):
        status = runner.invoke(app, args)
        assert status.exit_code == 0, status.output
        shown[" ".join(args)] = status.output
    assert "reader:***@127.0.0.1" in shown["status --json"]

    for where, text in shown.items():
        _assert_hidden(where, text)
    assert not Path(segctl_env / "runs" / rid / RunDir.RECIPE).exists()  # nothing submitted
