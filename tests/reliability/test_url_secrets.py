"""Credentials inside URLs (``http://user:secret@host/...``) are secrets: redacted wherever
segctl shows or stores a recipe, carried to the job in its environment, and still used.

The real run here reads its pretrained weights from ``tests/range_server.py`` and logs to a
real MLflow server, both through URLs holding credentials (the servers ignore them, as a
server behind a proxy would not)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from segctl.cli import app
from segctl.recipe.secrets import (
    externalize_secrets,
    literal_secrets,
    redact_secrets,
    redact_url_credentials,
    references,
    resolve_secrets,
)
from tests.servers import mlflow_server, range_server  # noqa: F401  (fixtures)
from tests.trainer_runs import small_recipe
from trainer.progress import Progress
from trainer.tracking import flatten_params

WEIGHTS_SECRET = "wpass-7Q3ZK2PLM-d41d8cd98f"
TRACKING_SECRET = "tpass-K7MDENG-9f4d0b1c"
SECRETS = (WEIGHTS_SECRET, TRACKING_SECRET)
runner = CliRunner()


def test_the_rule_hides_passwords_and_tokens_in_values_and_text():
    assert redact_url_credentials("https://user:pw@host:8443/w.pth") == \
        "https://user:***@host:8443/w.pth"
    assert redact_url_credentials("s3://AKIA1:s3cr3t@bucket/x") == "s3://AKIA1:***@bucket/x"
    assert redact_url_credentials("https://ghp_token123@host/x") == "https://***@host/x"
    assert redact_url_credentials(
        "GET http://a:b@h/x failed; retry http://c:d@h2/y") == \
        "GET http://a:***@h/x failed; retry http://c:***@h2/y"
    kept = "https://user:${MY_PASSWORD}@host/x"  # a reference names a variable: shown
    assert redact_url_credentials(kept) == kept
    for plain in ("https://host/a@b", "user@example.org", "sqlite:////tmp/mlflow.db"):
        assert redact_url_credentials(plain) == plain


def test_url_credentials_travel_like_literal_storage_secrets(tmp_path):
    recipe = small_recipe(tmp_path, f"http://tracker:{TRACKING_SECRET}@127.0.0.1:5000",
                          model={"init_checkpoint": f"https://r:{WEIGHTS_SECRET}@h/w.pth"})
    assert literal_secrets(recipe) == ["model.init_checkpoint", "tracking.uri"]
    written, env = externalize_secrets(recipe, "trainer-test-1a2b3c4d")
    text = written.model_dump_json()
    assert not any(secret in text for secret in SECRETS)
    assert written.model.init_checkpoint == \
        "https://r:${SEGCTL_SECRET_1A2B3C4D_MODEL_INIT_CHECKPOINT}@h/w.pth"
    assert env == {"SEGCTL_SECRET_1A2B3C4D_MODEL_INIT_CHECKPOINT": WEIGHTS_SECRET,
                   "SEGCTL_SECRET_1A2B3C4D_TRACKING_URI": TRACKING_SECRET}
    assert references(written) == {
        "model.init_checkpoint": "SEGCTL_SECRET_1A2B3C4D_MODEL_INIT_CHECKPOINT",
        "tracking.uri": "SEGCTL_SECRET_1A2B3C4D_TRACKING_URI"}
    assert resolve_secrets(written, env) == recipe  # the job gets the URLs back whole
    shown = json.dumps(redact_secrets(recipe.model_dump(mode="json")))
    params = json.dumps(flatten_params(recipe.model_dump(mode="json")))
    for text in (shown, params):
        assert "https://r:***@h/w.pth" in text and "http://tracker:***@127.0.0.1:5000" in text
        assert not any(secret in text for secret in SECRETS)


@pytest.fixture(scope="module")
def mit_b0_weights(range_server) -> str:
    """A MiT-B0 backbone file (random weights, real key names) served as ``mit_b0.pth``."""
    import torch

    from trainer.models import build_segmentor

    torch.manual_seed(0)
    torch.save(build_segmentor("segformer_mit_b0", 19).backbone.state_dict(),
               range_server.root / "mit_b0.pth")
    return "mit_b0.pth"


def _recipe_file(folder: Path, root: Path, weights_url: str, tracking: str) -> Path:
    import yaml

    recipe = small_recipe(
        root, tracking, name="urlsecret", data={"crop_size": [64, 128]},
        train={"batch_size": 1}, model={"init_checkpoint": weights_url},
        schedule={"max_iters": 2, "val_interval": 2, "checkpoint_interval": 2,
                  "log_interval": 1},
        tracking={"system_metrics": False},
    )
    path = folder / "urlsecret.yaml"
    path.write_text(yaml.safe_dump(recipe.model_dump(mode="json", exclude_defaults=True),
                                   sort_keys=False))
    return path


def _tree_bytes(folder: Path, skip: tuple[str, ...] = ()) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*"))
                    if p.is_file() and not any(part in skip for part in p.parts))


def _assert_no_secret(where: str, data: str | bytes) -> None:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    for secret in SECRETS:
        at = text.find(secret)
        assert at < 0, f"{secret} in {where}: ...{text[max(0, at - 300):at + 100]}..."


def test_a_run_whose_urls_hold_credentials_keeps_them_out_of_every_output_and_file(
        segctl_env, range_server, mlflow_server, mit_b0_weights, cityscapes_frame_root,
        monkeypatch, capfd):
    weights_url = f"http://reader:{WEIGHTS_SECRET}@127.0.0.1:{range_server.port}/mit_b0.pth"
    tracking = f"http://tracker:{TRACKING_SECRET}@127.0.0.1:{mlflow_server.port}"
    recipe = _recipe_file(segctl_env, cityscapes_frame_root, weights_url, tracking)

    show = runner.invoke(app, ["recipes", "show", str(recipe)])
    dry = runner.invoke(app, ["submit", str(recipe), "--dry-run", "--cluster", "local"])
    for result in (show, dry):
        assert result.exit_code == 0, result.output
        _assert_no_secret("command output", result.output)
    assert "http://reader:***@127.0.0.1" in show.output
    (planned,) = json.loads(dry.stdout)["weights"]
    assert planned["url"] == redact_url_credentials(weights_url)

    submitted = runner.invoke(app, ["submit", str(recipe), "--wait", "--cluster", "local"])
    assert submitted.exit_code == 0, submitted.output
    assert "COMPLETED" in submitted.output
    status = runner.invoke(app, ["status", "--json"])
    (run,) = json.loads(status.stdout)
    assert run["state"] == "COMPLETED"
    logs = runner.invoke(app, ["logs", run["run_id"]])
    listed = runner.invoke(app, ["weights", "list"]).output
    listed += runner.invoke(app, ["weights", "list", "--json"]).output
    assert listed.count("http://reader:***@127.0.0.1") == 2, listed
    run_dir = Path(run["run_dir"])
    stored = json.loads((run_dir / "recipe.json").read_text())
    assert "${SEGCTL_SECRET_" in stored["model"]["init_checkpoint"]
    assert "${SEGCTL_SECRET_" in stored["tracking"]["uri"]

    # MLflow got the params, the recipe artifact and the metrics through the credentialed URL
    client = MlflowClient(mlflow_server.url)
    mlflow_run_id = (run_dir / "mlflow_run_id").read_text().strip()
    logged = client.get_run(mlflow_run_id)
    assert logged.data.params["model.init_checkpoint"] == redact_url_credentials(weights_url)
    assert logged.data.params["tracking.uri"] == redact_url_credentials(tracking)
    assert "loss" in logged.data.metrics and logged.info.status == "FINISHED"
    artifact = Path(client.download_artifacts(mlflow_run_id, "recipe.json",
                                              str(segctl_env / "downloaded")))
    assert json.loads(artifact.read_text())["model"]["init_checkpoint"] == \
        redact_url_credentials(weights_url)

    # sync reaches MLflow through the stored URI: its variable must be exported again
    refused = runner.invoke(app, ["sync", run["run_id"]])
    assert refused.exit_code == 2 and "SEGCTL_SECRET_" in refused.output, refused.output
    for var, value in (("MODEL_INIT_CHECKPOINT", WEIGHTS_SECRET), ("TRACKING_URI",
                                                                   TRACKING_SECRET)):
        monkeypatch.setenv(f"SEGCTL_SECRET_{run['run_id'][-8:].upper()}_{var}", value)
    synced = runner.invoke(app, ["sync", run["run_id"]])
    assert synced.exit_code == 0 and "nothing to sync" in synced.output, synced.output

    # a job that fails over a URL says so in progress.json without the secret
    from trainer.entry import run_training

    shutil.rmtree(segctl_env / "home" / "weights" / "blobs")
    with pytest.raises(Exception, match="mit_b0.pth"):
        run_training(run_dir, weights_dir=segctl_env / "home" / "weights")
    progress = json.loads((run_dir / "progress.json").read_text())
    assert progress["phase"] == "failed" and "reader:***@" in progress["reason"]

    outputs = (show.output + dry.output + submitted.output + status.output + logs.output
               + listed + refused.output + synced.output)
    captured = capfd.readouterr()
    _assert_no_secret("command outputs", outputs)
    _assert_no_secret("this process's stdout and stderr", captured.out + captured.err)
    _assert_no_secret("the run directory (recipe.json, progress.json, job logs, journal)",
                      _tree_bytes(run_dir))
    _assert_no_secret("the registry and the report index", _tree_bytes(
        segctl_env / "home", skip=("weights",)))
    _assert_no_secret("the MLflow run and its artifacts", json.dumps(
        [logged.data.params, logged.data.tags]) + artifact.read_text())
    _assert_no_secret("the MLflow server's store", _tree_bytes(mlflow_server.workdir,
                                                               skip=("server.log",)))


def test_progress_reasons_hide_url_credentials(tmp_path):
    progress = Progress(tmp_path, 10)
    progress.update(phase="failed",
                    reason=f"OSError: cannot read http://reader:{WEIGHTS_SECRET}@h/w.pth")
    text = (tmp_path / "progress.json").read_text()
    assert WEIGHTS_SECRET not in text and "http://reader:***@h/w.pth" in text
