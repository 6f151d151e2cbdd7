"""Secrets in storage options stay out of the run directory, the plan, the sbatch script,
MLflow and the logs, and still reach the job (through its environment): against a real moto S3
server, on the local executor and on the dev Slurm cluster."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from segctl.cli import app
from segctl.recipe.secrets import (
    MissingSecretError,
    externalize_secrets,
    literal_secrets,
    redact_secrets,
    references,
    resolve_secrets,
)
from segctl.runs import create_run_dir
from tests.servers import aws_env, moto_server  # noqa: F401  (fixtures)
from tests.trainer_runs import frame_job_yaml, one_frame_cityscapes, small_recipe
from trainer.tracking import flatten_params

KEY = "AKIAEXAMPLE7Q3ZK2PLM"
SECRET = "s3cr3t-wJalrXUtnFEMI-K7MDENG-9f4d"
runner = CliRunner()


def _options_recipe(tmp_path: Path, **options: str):
    return small_recipe(tmp_path, "sqlite:///x.db",
                        data={"storage_options": {"endpoint_url": "http://127.0.0.1:1", **options}})


def test_literal_secrets_become_references_and_come_back_in_the_job(tmp_path):
    recipe = _options_recipe(tmp_path, key=KEY, secret=SECRET, token="${MY_TOKEN}")
    assert literal_secrets(recipe) == ["data.storage_options.key", "data.storage_options.secret"]

    written, env = externalize_secrets(recipe, "trainer-test-1a2b3c4d")
    assert env == {"SEGCTL_SECRET_1A2B3C4D_DATA_KEY": KEY,
                   "SEGCTL_SECRET_1A2B3C4D_DATA_SECRET": SECRET}
    text = written.model_dump_json()
    assert KEY not in text and SECRET not in text
    assert written.data.storage_options == {
        "endpoint_url": "http://127.0.0.1:1",
        "key": "${SEGCTL_SECRET_1A2B3C4D_DATA_KEY}",
        "secret": "${SEGCTL_SECRET_1A2B3C4D_DATA_SECRET}",
        "token": "${MY_TOKEN}",  # already a reference: left alone
    }
    assert literal_secrets(written) == []
    assert references(written)["data.storage_options.token"] == "MY_TOKEN"

    job = resolve_secrets(written, {**env, "MY_TOKEN": "tok"})
    assert job.data.storage_options == {"endpoint_url": "http://127.0.0.1:1", "key": KEY,
                                        "secret": SECRET, "token": "tok"}
    with pytest.raises(MissingSecretError) as missing:
        resolve_secrets(written, {"SEGCTL_SECRET_1A2B3C4D_DATA_KEY": KEY})
    message = str(missing.value)
    assert "$SEGCTL_SECRET_1A2B3C4D_DATA_SECRET" in message and "$MY_TOKEN" in message
    assert KEY not in message

    plain = _options_recipe(tmp_path)  # nothing secret: the same object back
    assert externalize_secrets(plain, "trainer-test-1a2b3c4d") == (plain, {})


def test_run_directory_refuses_a_literal_secret(tmp_path):
    with pytest.raises(ValueError, match="data.storage_options.secret") as refused:
        create_run_dir(tmp_path / "run", _options_recipe(tmp_path, secret=SECRET))
    assert SECRET not in str(refused.value)
    assert not (tmp_path / "run").exists()


def test_redaction_keeps_references_and_plain_options(tmp_path):
    recipe = _options_recipe(tmp_path, secret=SECRET, sas_token="${SAS}", profile="lab")
    shown = redact_secrets(recipe.model_dump(mode="json"))["data"]["storage_options"]
    assert shown == {"endpoint_url": "http://127.0.0.1:1", "secret": "***",
                     "sas_token": "${SAS}", "profile": "lab"}
    # MLflow params hide every value of any storage_options mapping, wherever it sits
    flat = flatten_params({"data": {"storage_options": {"secret": SECRET}},
                           "train": {"storage_options": {"token": SECRET}, "seed": 1}})
    assert flat == {"data.storage_options.secret": "***", "train.storage_options.token": "***",
                    "train.seed": "1"}


def _recipe_file(folder: Path, root: str, endpoint: str, scratch: Path) -> Path:
    path = folder / "s3secret.yaml"
    path.write_text(frame_job_yaml(
        "s3secret", root, command=f"segctl submit {path} --cluster local --wait", data=f"""\
  stage_to: node-local
  scratch_dir: {scratch}
  storage_options:
    endpoint_url: {endpoint}
    key: {KEY}
    secret: {SECRET}
""", tail="tracking:\n  system_metrics: false\n"))
    return path


def _tree_bytes(*folders: Path) -> bytes:
    return b"".join(p.read_bytes() for folder in folders if folder.exists()
                    for p in sorted(folder.rglob("*")) if p.is_file())


def test_dry_run_and_recipes_show_print_no_secret(segctl_env):
    recipe = _recipe_file(segctl_env, "s3://frames/cityscapes", "http://127.0.0.1:1",
                          segctl_env / "scratch")
    local = runner.invoke(app, ["submit", str(recipe), "--dry-run", "--cluster", "local"])
    slurm = runner.invoke(app, ["submit", str(recipe), "--dry-run", "--cluster", "slurm"])
    show = runner.invoke(app, ["recipes", "show", str(recipe)])
    for result in (local, slurm, show):
        assert result.exit_code == 0, result.output
        assert SECRET not in result.output and KEY not in result.output
    assert "#SBATCH" in slurm.output  # the sbatch script was rendered, without the secret
    notes = json.loads(local.output)["notes"]
    assert any("data.storage_options.secret holds a literal secret" in n for n in notes)
    assert '"secret": "***"' in show.output
    assert not (segctl_env / "runs").exists()


def _submit_with_secret_and_check(real_data, segctl_env, moto_server, monkeypatch, tmp_path,
                                  placement: list[str]) -> None:
    """Submit a recipe whose literal key and secret are the only S3 credentials, on the
    executor ``placement`` selects; check the job staged with them and nothing kept them."""
    fs = moto_server.filesystem()
    fs.mkdir("frames")
    local = one_frame_cityscapes(real_data / "cityscapes", tmp_path / "upload")
    fs.put(str(local) + "/", "frames/cityscapes/", recursive=True)
    # the recipe's key and secret are the only credentials the job can find
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    scratch = tmp_path / "scratch"
    recipe = _recipe_file(segctl_env, "s3://frames/cityscapes", moto_server.url, scratch)

    submitted = runner.invoke(app, ["submit", str(recipe), *placement, "--wait"])
    assert submitted.exit_code == 0, submitted.output
    assert "COMPLETED" in submitted.output
    assert "warning: data.storage_options.key holds a literal secret" in submitted.output
    assert not [k for k in os.environ if k.startswith("SEGCTL_SECRET_")]  # put back

    staged = list(scratch.glob("segctl-data/cityscapes-*"))  # the job staged with the secret
    assert len(staged) == 1 and (staged[0] / "leftImg8bit" / "val" / "frankfurt").is_dir()
    status = runner.invoke(app, ["status", "--json"])
    (run,) = json.loads(status.output)
    assert run["state"] == "COMPLETED"
    run_dir = Path(run["run_dir"])
    stored = json.loads((run_dir / "recipe.json").read_text())["data"]["storage_options"]
    assert stored["secret"].startswith("${SEGCTL_SECRET_") and stored["key"].startswith("${")

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{segctl_env / 'mlflow.db'}")
    (mlflow_run,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.`segctl.run_id` = '{run['run_id']}'",
    )
    assert mlflow_run.data.params["data.storage_options.secret"] == "***"
    logs = runner.invoke(app, ["logs", run["run_id"]])
    assert logs.exit_code == 0, logs.output

    # a later job of the run without the variable: refused before submission, secret unnamed
    again = runner.invoke(app, ["eval", run["run_id"], *placement])
    assert again.exit_code == 2 and "SEGCTL_SECRET_" in again.output

    outputs = (submitted.output + status.output + logs.output + again.output).encode()
    files = _tree_bytes(segctl_env / "runs", segctl_env / "home", segctl_env / "mlartifacts",
                        scratch)
    files += (segctl_env / "mlflow.db").read_bytes()
    for value in (SECRET, KEY):
        assert value.encode() not in outputs
        assert value.encode() not in files


@pytest.mark.slow
def test_submitted_job_gets_the_secret_and_no_file_or_output_holds_it(
        real_data, segctl_env, moto_server, monkeypatch, tmp_path):
    _submit_with_secret_and_check(real_data, segctl_env, moto_server, monkeypatch, tmp_path,
                                  ["--cluster", "local"])


@pytest.mark.slow
def test_slurm_job_gets_the_secret_through_sbatch_and_no_file_holds_it(
        slurm_cluster, real_data, segctl_env, moto_server, monkeypatch, tmp_path):
    """On the dev cluster: sbatch exports the submitting environment (the default
    ``--export=ALL``), so the job resolves the ${SEGCTL_SECRET_...} references of recipe.json;
    the sbatch script and submitit's files under the run directory hold no secret."""
    _submit_with_secret_and_check(
        real_data, segctl_env, moto_server, monkeypatch, tmp_path,
        ["--cluster", "slurm", "--partition", "dev", "--gpus-per-node", "0", "--time", "10"],
    )


def test_unset_references_refuse_the_job_unless_a_profile_setup_line_sets_them(tmp_path,
                                                                               monkeypatch):
    """Checked before anything is queued: locally the environment must hold the variable; on
    Slurm a setup line of the site profile may provide it instead."""
    from segctl.recipe.profile import SiteProfile
    from segctl.submission import SubmitError, _check_secret_references, plan_evaluation

    monkeypatch.delenv("MY_S3_SECRET", raising=False)
    recipe = _options_recipe(tmp_path, secret="${MY_S3_SECRET}")
    setup = SiteProfile(setup=["export MY_S3_SECRET=$(cat ~/.s3secret)"])

    def plan(executor: str, profile: SiteProfile | None = None):
        return plan_evaluation(tmp_path / "run", recipe, "x.yaml", None, False, executor, profile)

    for refused in (plan("local"), plan("slurm"), plan("slurm", SiteProfile(setup=["module load x"]))):
        with pytest.raises(SubmitError, match=r"data.storage_options.secret \(\$MY_S3_SECRET\)"):
            _check_secret_references(refused)
    _check_secret_references(plan("slurm", setup))  # the profile sets it in the job
    monkeypatch.setenv("MY_S3_SECRET", "s")
    _check_secret_references(plan("local"))
