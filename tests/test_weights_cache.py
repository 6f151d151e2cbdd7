"""The pretrained-weights cache through the real CLI, a real HTTP server and real jobs.

A ``tests/range_server.py`` process on 127.0.0.1 serves checkpoints built from this project's
own models (so the key names are real) under torch.hub-style names carrying the first 8 hex
digits of their SHA-256; its request log shows every GET and its ``Range`` header. Each test has
its own ``$SEGCTL_HOME`` and so its own cache (``$SEGCTL_HOME/weights``).

Covered: a second fetch sends no request; an interrupted download continues with a ranged GET;
a name whose hash does not match is refused; bad input exits 2; a recipe's weights are checked
on the meta device, then a real local job trains from the cached file (the server sees no
request) and ``segctl eval --checkpoint URL`` reads the cache too; a job whose cached file was
deleted fails at once naming it; ``--from-scratch`` for a recipe with a reference and no
weights.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from segctl.cli import app
from tests.servers import range_server  # noqa: F401  (fixture)
from tests.trainer_runs import small_recipe

runner = CliRunner()


def write_recipe(segctl_env: Path, root: Path, name: str, model: str, iters: int,
                 init: str | None = None, reference: bool = False) -> Path:
    """A CPU-sized recipe file (:func:`tests.trainer_runs.small_recipe`, one image of 64x128
    per step) logging to ``segctl_env``'s MLflow store."""
    import yaml

    recipe = small_recipe(
        root, f"sqlite:///{segctl_env / 'mlflow.db'}", name=name,
        data={"crop_size": [64, 128]}, train={"batch_size": 1},
        model={"name": model, "init_checkpoint": init},
        schedule={"max_iters": iters, "val_interval": iters, "checkpoint_interval": iters},
        reference={"miou_ss": 70.0, "source": "a published table (test)"} if reference else None,
    )
    path = segctl_env / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe.model_dump(mode="json", exclude_defaults=True),
                                   sort_keys=False))
    return path


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def hrnet_w18(range_server) -> str:
    """An mmseg-style HRNetV2-W18 ImageNet backbone file (random weights, real key names,
    ~39 MB), served as ``hrnetv2_w18-<first 8 hex of its SHA-256>.pth``; returns the name."""
    import torch

    from trainer.models import build_segmentor

    torch.manual_seed(0)
    state = build_segmentor("fcn_hrnetv2_w18", 19).backbone.state_dict()
    saved = range_server.root / "hrnetv2_w18.tmp"
    torch.save(state, saved)
    name = f"hrnetv2_w18-{sha256_of(saved)[:8]}.pth"
    saved.rename(range_server.root / name)
    return name


def cache_dir(segctl_env: Path) -> Path:
    return segctl_env / "home" / "weights"


def mlflow_params(segctl_env: Path) -> dict[str, str]:
    """The params of the one MLflow run in ``segctl_env``'s store, read with MLflow's client."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{segctl_env / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("trainer-tests")
    (run,) = client.search_runs([experiment.experiment_id])
    return run.data.params


def fetch(*sources: str):
    return runner.invoke(app, ["weights", "fetch", "--quiet", *sources])


def test_second_fetch_sends_no_request_and_list_shows_the_sha256(segctl_env, range_server,
                                                                  hrnet_w18):
    url = f"{range_server.url}/{hrnet_w18}"
    served = range_server.root / hrnet_w18
    mark = range_server.log_size()
    first = fetch(url)
    assert first.exit_code == 0, first.output
    assert range_server.requests(hrnet_w18, since=mark), range_server.log_text()[mark:]
    digest = sha256_of(served)
    assert digest.startswith(hrnet_w18.split("-")[1][:8]) and digest in first.output
    blob = cache_dir(segctl_env) / "blobs" / "sha256" / digest
    assert blob.read_bytes() == served.read_bytes()
    (index,) = (cache_dir(segctl_env) / "index").glob("*.json")
    entry = json.loads(index.read_text())
    assert (entry["url"], entry["sha256"], entry["size"], entry["file_name"]) == (
        url, digest, served.stat().st_size, hrnet_w18)
    assert entry["fetched_at"].endswith("Z")

    mark = range_server.log_size()
    again = fetch(url)
    assert again.exit_code == 0 and "already cached" in again.output, again.output
    assert range_server.requests(hrnet_w18, since=mark) == []  # no GET
    assert range_server.requests(hrnet_w18, "HEAD", since=mark) == []  # not even a HEAD

    listed = runner.invoke(app, ["weights", "list"])
    assert listed.exit_code == 0, listed.output
    assert hrnet_w18 in listed.output and digest in listed.output and url in listed.output
    (row,) = json.loads(runner.invoke(app, ["weights", "list", "--json"]).output)
    assert (row["sha256"], row["path"], row["present"]) == (digest, str(blob), True)


def test_interrupted_download_resumes_with_a_range_request(segctl_env, range_server, hrnet_w18):
    url = f"{range_server.url}/{hrnet_w18}"
    served = range_server.root / hrnet_w18
    size = served.stat().st_size
    range_server.cut_next_download_at(size * 3 // 4)
    broken = fetch(url)
    assert broken.exit_code == 2, broken.output
    assert "broke off" in broken.output and "fetch again" in broken.output
    assert "Traceback" not in broken.output
    (part,) = (cache_dir(segctl_env) / "partial").glob("*.part")
    kept = part.stat().st_size
    assert 0 < kept < size
    assert not (cache_dir(segctl_env) / "blobs").exists()

    mark = range_server.log_size()
    resumed = fetch(url)
    assert resumed.exit_code == 0, resumed.output
    ranges = range_server.requests(hrnet_w18, since=mark)
    assert ranges and ranges[0].startswith(f"bytes={kept}-"), ranges  # continues, not restarts
    blob = cache_dir(segctl_env) / "blobs" / "sha256" / sha256_of(served)
    assert blob.read_bytes() == served.read_bytes()
    assert list((cache_dir(segctl_env) / "partial").glob("*.part")) == []


def test_a_name_with_the_wrong_hash_is_refused_and_nothing_is_cached(segctl_env, range_server):
    name = "mit_b0-0123abcd.pth"
    (range_server.root / name).write_bytes(b"not the file the name promises" * 100)
    actual = sha256_of(range_server.root / name)
    assert not actual.startswith("0123abcd")
    refused = fetch(f"{range_server.url}/{name}")
    assert refused.exit_code == 2, refused.output
    assert name in refused.output and "0123abcd" in refused.output and actual in refused.output
    assert "Traceback" not in refused.output
    cache = cache_dir(segctl_env)
    assert not (cache / "blobs").exists() and not (cache / "index").exists()
    assert list((cache / "partial").glob("*.part")) == []


@pytest.mark.parametrize("source, says", [
    ("missing.yaml", "missing.yaml"),
    ("htp://example/x.pth", "htp://example/x.pth"),
    ("SERVER/absent-00eb2006.pth", "404"),
    ("SERVER/error/hrnetv2_w18-00eb2006.pth", "500"),
    ("weights.pth", "neither a recipe file"),
])
def test_bad_input_is_a_clear_message_and_exit_2(segctl_env, range_server, source, says):
    result = fetch(source.replace("SERVER", range_server.url))
    assert result.exit_code == 2, result.output
    assert says in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_recipe_weights_are_checked_cached_and_read_by_the_job(segctl_env, range_server,
                                                              hrnet_w18, cityscapes_frame_root):
    url = f"{range_server.url}/{hrnet_w18}"
    recipe = write_recipe(segctl_env, cityscapes_frame_root, "hrnet-init", "fcn_hrnetv2_w18",
                          iters=1, init=url, reference=True)
    plan = runner.invoke(app, ["submit", str(recipe), "--dry-run", "--cluster", "local"])
    assert plan.exit_code == 0, plan.output
    (planned,) = json.loads(plan.output)["weights"]
    size = (range_server.root / hrnet_w18).stat().st_size
    assert (planned["url"], planned["cached"], planned["size_bytes"]) == (url, False, size)
    assert not cache_dir(segctl_env).exists()  # a dry run downloads nothing

    fetched = fetch(str(recipe))
    assert fetched.exit_code == 0, fetched.output
    assert f"{hrnet_w18} (backbone) into the backbone" in fetched.output  # checked on meta
    assert "missing" not in fetched.output and "unexpected" not in fetched.output

    mark = range_server.log_size()
    submitted = runner.invoke(app, ["submit", str(recipe), "--wait", "--cluster", "local"])
    assert submitted.exit_code == 0, submitted.output
    assert "COMPLETED" in submitted.output and "checked before" in submitted.output
    assert range_server.requests(hrnet_w18, since=mark) == []  # the job read the cache

    (run,) = json.loads(runner.invoke(app, ["status", "--json"]).output)
    logs = runner.invoke(app, ["logs", run["run_id"]]).output
    blob = cache_dir(segctl_env) / "blobs" / "sha256" / sha256_of(range_server.root / hrnet_w18)
    # every key of the file matched the backbone's: strict in effect
    assert f"loaded {blob} (backbone) into the backbone" in logs, logs
    loaded_line = next(line for line in logs.splitlines() if f"loaded {blob}" in line)
    assert "missing" not in loaded_line and "unexpected" not in loaded_line

    params = mlflow_params(segctl_env)
    assert params["model.init_checkpoint"] == url  # the URL, not the cached file
    assert params["segctl.from_scratch"] == "false"

    # eval --checkpoint URL: fetched (and checked as a whole model) here, read from the cache
    run_dir = Path(run["run_dir"])
    shutil.copy(run_dir / "checkpoints" / "final.pt", range_server.root / "hrnet-init-final.pt")
    trained = f"{range_server.url}/hrnet-init-final.pt"
    assert fetch(trained).exit_code == 0
    mark = range_server.log_size()
    evaluated = runner.invoke(app, ["eval", run["run_id"], "--checkpoint", trained, "--wait",
                                    "--cluster", "local"])
    assert evaluated.exit_code == 0, evaluated.output
    assert "mIoU" in evaluated.output
    assert range_server.log_text()[mark:] == ""  # neither the submission nor the job asked

    # the cached file disappears: the job fails at once, naming it, and downloads nothing
    from segctl.io.weights_cache import NotCachedError
    from trainer.entry import run_training

    blob.unlink()
    mark = range_server.log_size()
    with pytest.raises(NotCachedError, match=hrnet_w18) as failure:
        run_training(run_dir, weights_dir=cache_dir(segctl_env))
    assert "segctl weights fetch" in str(failure.value) and str(blob) in str(failure.value)
    progress = json.loads((run_dir / "progress.json").read_text())
    assert progress["phase"] == "failed" and hrnet_w18 in progress["reason"]
    assert range_server.log_text()[mark:] == ""


@pytest.mark.slow
def test_reference_without_weights_needs_from_scratch(segctl_env, cityscapes_frame_root):
    recipe = write_recipe(segctl_env, cityscapes_frame_root, "scratch", "segformer_mit_b0",
                          iters=1, reference=True)
    refused = runner.invoke(app, ["submit", str(recipe), "--dry-run"])
    assert refused.exit_code == 2, refused.output
    assert "model.init_checkpoint" in refused.output and "--from-scratch" in refused.output
    assert "Traceback" not in refused.output
    assert runner.invoke(app, ["submit", str(recipe)]).exit_code == 2
    assert not (segctl_env / "runs").exists()

    trained = runner.invoke(app, ["submit", str(recipe), "--from-scratch", "--wait",
                                  "--cluster", "local"])
    assert trained.exit_code == 0, trained.output
    assert "COMPLETED" in trained.output

    assert mlflow_params(segctl_env)["segctl.from_scratch"] == "true"
