"""``segctl submit`` planning, bad input and the registry, through the real Typer app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from segctl.cli import app
from segctl.io.home import segctl_home
from segctl.registry import Registry
from tests.trainer_runs import frame_job_yaml

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]

#: A four-iteration job on a one-frame root: fill in ``path`` and ``root``.
RECIPE = frame_job_yaml("frame", "{root}", command="segctl submit {path} --wait",
                        crop_size="[128, 256]", max_iters=4, val_interval=4,
                        checkpoint_interval=2)


def write_recipe(tmp_path: Path, root: Path | str) -> Path:
    path = tmp_path / "frame.yaml"
    path.write_text(RECIPE.format(path=path, root=root))
    return path


def test_dry_run_plans_without_side_effects(segctl_env, cityscapes_frame_root):
    recipe = write_recipe(segctl_env, cityscapes_frame_root)
    result = runner.invoke(app, ["submit", str(recipe), "--dry-run", "--set", "train.seed=3"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["kind"] == "train" and plan["executor"] == "local"
    assert plan["run_id"].startswith("frame-")
    assert plan["parameters"]["timeout_min"] == 24 * 60
    assert plan["data_root"] == str(cityscapes_frame_root)
    assert plan["tracking_uri"] == f"sqlite:///{segctl_env / 'mlflow.db'}"
    assert not (segctl_env / "runs").exists()
    assert not (segctl_env / "home").exists()


def test_missing_dataset_folder_exits_2_and_leaves_nothing(segctl_env):
    recipe = write_recipe(segctl_env, segctl_env / "no-such-dataset")
    result = runner.invoke(app, ["submit", str(recipe)])
    assert result.exit_code == 2
    assert f"{recipe}:5: data.root: dataset folder" in result.output
    assert "Traceback" not in result.output
    assert not (segctl_env / "runs").exists()
    assert Registry(segctl_home()).jobs() == []


def test_dataset_without_the_split_exits_2(segctl_env, cityscapes_frame_root, tmp_path):
    empty = segctl_env / "empty-root"
    (empty / "leftImg8bit" / "train").mkdir(parents=True)
    recipe = write_recipe(segctl_env, empty)
    result = runner.invoke(app, ["submit", str(recipe)])
    assert result.exit_code == 2
    assert ":5: data.root: train: CityscapesDataset: split folder for 'train' does not exist" in result.output
    assert not (segctl_env / "runs").exists()


@pytest.mark.parametrize(
    ("override", "needle"),
    [("train.batch_size=zero", "train.batch_size"), ("nope=1", "nope: unknown key")],
)
def test_bad_overrides_exit_2(segctl_env, cityscapes_frame_root, override, needle):
    recipe = write_recipe(segctl_env, cityscapes_frame_root)
    result = runner.invoke(app, ["submit", str(recipe), "--set", override])
    assert result.exit_code == 2
    assert f"--set {override}" in result.output and needle in result.output
    assert not (segctl_env / "runs").exists()


def test_unknown_run_is_a_clear_error(segctl_env):
    for args in (["status", "nope"], ["logs", "nope"], ["eval", "nope"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, args
        assert "no run matches 'nope'" in result.output


def test_status_without_runs(segctl_env):
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 0 and "no runs yet" in result.output
    assert json.loads(runner.invoke(app, ["status", "--json"]).output) == []


def test_registry_marker_then_job_id(tmp_path):
    registry = Registry(tmp_path)
    row = registry.begin_job("r-1", "train", "local", "/f", None)
    (job,) = registry.jobs("r-1")
    assert job.state == "SUBMITTING" and job.job_id is None
    registry.submitted(row, "123")
    registry.set_state(row, "COMPLETED")
    (job,) = registry.jobs("r-1")
    assert (job.job_id, job.state) == ("123", "COMPLETED") and job.finished_at is not None
    other = registry.begin_job("r-1", "eval", "local", "/f", "ss-x")
    registry.forget_job(other)
    assert [j.id for j in registry.jobs("r-1")] == [row]


@pytest.mark.parametrize(
    ("edit", "location"),
    [
        (
            lambda t: t.replace("crop_size: [128, 256]", "crop_size: [128, 256"),
            ":7: malformed YAML: expected ',' or ']', but got ':' (while parsing a flow sequence that starts on line 6)",
        ),
        (lambda t: t.replace("  num_workers: 0", "  num_workers: 0\n  nmu_workers: 1"), ":9: data.nmu_workers"),
        (lambda t: t.replace("batch_size: 1", "batch_size: one"), ":18: train.batch_size"),
    ],
    ids=["malformed-yaml", "unknown-key", "wrong-type"],
)
def test_bad_recipe_submits_nothing(segctl_env, cityscapes_frame_root, edit, location):
    recipe = write_recipe(segctl_env, cityscapes_frame_root)
    recipe.write_text(edit(recipe.read_text()))
    result = runner.invoke(app, ["submit", str(recipe)])
    assert result.exit_code == 2, result.output
    assert f"{recipe}{location}" in result.output
    assert "Traceback" not in result.output
    assert not (segctl_env / "runs").exists()
    assert not (segctl_env / "home").exists() or Registry(segctl_home()).jobs() == []


def test_corrupt_label_fails_before_submission(segctl_env, cityscapes_frame_root, tmp_path):
    import shutil

    root = tmp_path / "corrupt"
    shutil.copytree(cityscapes_frame_root, root)
    (label,) = (root / "gtFine" / "val" / "frankfurt").glob("*_labelTrainIds.png")
    label.write_bytes(b"\x89PNG not really")
    recipe = write_recipe(segctl_env, root)
    result = runner.invoke(app, ["submit", str(recipe)])
    assert result.exit_code == 2, result.output
    assert ":5: data.root: val:" in result.output and label.name in result.output
    assert not (segctl_env / "runs").exists()


def test_local_executor_warns_when_the_recipe_asks_for_many_processes(segctl_env):
    """The headline recipe (16 GPUs x 1 image) on the local executor: one process, so the
    plan keeps the published global batch by accumulating 16 micro-batches and says so; with
    --scale-lr linear the global batch shrinks to 1, and the note says that instead; a
    one-process recipe gets no such note."""
    headline = REPO / "recipes" / "internimage_h_ade20k.yaml"
    result = runner.invoke(app, ["submit", str(headline), "--dry-run", "--cluster", "local"])
    assert result.exit_code == 0, result.output
    # the recipes' datasets are not here: the plans also list that a submit would refuse that
    notes = [n for n in json.loads(result.output)["notes"] if "data.root: dataset" not in n]
    (placement,) = [n for n in notes if "the local executor runs 1 process" in n]
    assert "published on 2 node(s) x 8 GPU(s), 16 processes" in placement
    assert "gradient accumulation 16 keeps its global batch of 16" in placement
    assert "--cluster slurm" in placement
    assert "gradient accumulation 16: 1 process x 1 image x 16" in notes[0]
    scaled = runner.invoke(app, ["submit", str(headline), "--dry-run", "--cluster", "local",
                                 "--scale-lr", "linear"])
    assert scaled.exit_code == 0, scaled.output
    (placement,) = [n for n in json.loads(scaled.output)["notes"]
                    if "the local executor runs 1 process" in n]
    assert "the global batch is 1 instead of 16" in placement
    quick = runner.invoke(app, ["submit", str(REPO / "recipes" / "quickstart.yaml"), "--dry-run",
                                "--cluster", "local"])
    assert quick.exit_code == 0, quick.output
    assert [n for n in json.loads(quick.output)["notes"] if "data.root: dataset" not in n] == []


@pytest.mark.slow  # trains four iterations as a local job
def test_a_finished_run_is_left_as_it_is_unless_rerun(segctl_env, cityscapes_frame_root):
    recipe = write_recipe(segctl_env, cityscapes_frame_root)
    first = runner.invoke(app, ["submit", str(recipe), "--wait"])
    assert first.exit_code == 0, first.output
    (run,) = Registry(segctl_home()).runs()
    progress = json.loads((Path(run.run_dir) / "progress.json").read_text())
    assert progress["phase"] == "done"
    # the last line is the final evaluation's figure, whatever the last poll showed
    assert first.output.rstrip().splitlines()[-1] == (
        f"{run.run_id}: COMPLETED (iteration 4/4, mIoU {progress['miou']:.2f})")
    final = Path(run.run_dir) / "checkpoints" / "final.pt"
    written = final.stat().st_mtime_ns

    # submitting the finished run again submits nothing, says so, and changes nothing
    again = runner.invoke(app, ["submit", str(recipe), "--wait"])
    assert again.exit_code == 0, again.output
    assert f"{run.run_id} has finished training (iteration 4/4, mIoU " in again.output
    assert "nothing submitted" in again.output and "--rerun" in again.output
    assert len(Registry(segctl_home()).jobs(run.run_id)) == 1
    assert json.loads((Path(run.run_dir) / "progress.json").read_text()) == progress
    assert final.stat().st_mtime_ns == written

    # the plan says so too; with --rerun the plan is an ordinary one
    planned = json.loads(runner.invoke(app, ["submit", str(recipe), "--dry-run"]).output)
    assert any("has finished training" in note for note in planned["notes"])
    rerun = json.loads(runner.invoke(app, ["submit", str(recipe), "--dry-run", "--rerun"]).output)
    assert not any("has finished training" in note for note in rerun["notes"])

    # --rerun submits a job, which validates the final weights again and ends COMPLETED
    rerun = runner.invoke(app, ["submit", str(recipe), "--rerun", "--wait"])
    assert rerun.exit_code == 0, rerun.output
    jobs = Registry(segctl_home()).jobs(run.run_id)
    assert [job.state for job in jobs] == ["COMPLETED", "COMPLETED"]


def _job_processes(controller_pid: int) -> list:
    """The local job's controller and every process under it."""
    import psutil

    controller = psutil.Process(controller_pid)
    return [controller, *controller.children(recursive=True)]


@pytest.mark.slow  # trains four iterations as a local job
def test_submitting_a_run_whose_job_is_in_progress_attaches_to_it(segctl_env,
                                                                  cityscapes_frame_root):
    import threading

    recipe = write_recipe(segctl_env, cityscapes_frame_root)
    first = runner.invoke(app, ["submit", str(recipe)])
    assert first.exit_code == 0, first.output
    (job,) = Registry(segctl_home()).jobs()
    # the job is held still, so it is in progress whatever the machine's speed
    held = _hold(int(job.job_id))
    try:
        again = runner.invoke(app, ["submit", str(recipe)])
    finally:
        _release(held)
    assert again.exit_code == 0, again.output
    assert f"has a training job in progress (local job {job.job_id}, RUNNING); nothing " \
           "submitted" in again.output
    assert "--wait to wait for it" in again.output
    assert len(Registry(segctl_home()).jobs()) == 1

    # with --wait it waits for that job (held again, released once the command is under way)
    held = _hold(int(job.job_id))  # its worker may have started meanwhile
    release = threading.Timer(2.0, _release, args=(held,))
    release.start()
    try:
        attached = runner.invoke(app, ["submit", str(recipe), "--wait"])
    finally:
        release.join()
    assert attached.exit_code == 0, attached.output
    assert f"local job {job.job_id}, RUNNING); nothing submitted.\n  waiting for it" in \
        attached.output
    assert attached.output.rstrip().splitlines()[-1].startswith(
        f"{job.run_id}: COMPLETED (iteration 4/4, mIoU ")
    (done,) = Registry(segctl_home()).jobs()
    assert done.state == "COMPLETED"


def _hold(pid: int):
    """Stop a local job's processes (SIGSTOP); returns them, to be continued."""
    import signal

    held = _job_processes(pid)
    for process in held:
        process.send_signal(signal.SIGSTOP)
    return held


def _release(held) -> None:
    import signal

    for process in held:
        process.send_signal(signal.SIGCONT)


@pytest.mark.slow  # trains four iterations and evaluates, as local jobs
def test_evaluating_again_while_that_evaluation_is_in_progress_attaches_to_it(
        segctl_env, cityscapes_frame_root):
    import threading

    recipe = write_recipe(segctl_env, cityscapes_frame_root)
    trained = runner.invoke(app, ["submit", str(recipe), "--wait"])
    assert trained.exit_code == 0, trained.output
    (run,) = Registry(segctl_home()).runs()
    first = runner.invoke(app, ["eval", run.run_id])
    assert first.exit_code == 0, first.output
    (job,) = [j for j in Registry(segctl_home()).jobs() if j.kind == "eval"]

    held = _hold(int(job.job_id))
    try:
        again = runner.invoke(app, ["eval", run.run_id])
    finally:
        _release(held)
    assert again.exit_code == 0, again.output
    assert f"has an evaluation ({job.label}) in progress (local job {job.job_id}, RUNNING); " \
           "nothing submitted" in again.output

    held = _hold(int(job.job_id))
    release = threading.Timer(2.0, _release, args=(held,))
    release.start()
    try:
        attached = runner.invoke(app, ["eval", run.run_id, "--wait"])
    finally:
        release.join()
    assert attached.exit_code == 0, attached.output
    assert "nothing submitted.\n  waiting for it" in attached.output
    assert attached.output.rstrip().splitlines()[-1].startswith(
        f"evaluation {job.label} of {run.run_id}: COMPLETED (mIoU ")
    assert [j.job_id for j in Registry(segctl_home()).jobs() if j.kind == "eval"] == [job.job_id]
