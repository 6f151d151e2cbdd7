"""Nothing beyond tensors is ever unpickled by the control plane.

A real local run is trained, then every file of it that a command could read is replaced by a
pickle that creates a marker file when loaded: submitit's ``jobs/*.pkl``, the checkpoints
(``torch.save`` of such an object), the tracking buffer, ``mlflow_run_id``, and a weights cache
entry. Then every command that reads runs is run through the CLI, each after a new unfinished
job row for the run (so each one has to learn the job's state afresh, as after a restart).
The marker must never appear. Commands whose job must load a planted checkpoint fail: the
job's ``torch.load(weights_only=True)`` refuses it.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from typer.testing import CliRunner

from segctl.cli import app
from segctl.io.home import segctl_home
from segctl.registry import Registry
from tests.reliability.test_job_records import (
    END_BOUND_S,
    controller_gone,
    stop_local_jobs,
)
from tests.test_cli_submit import write_recipe
from tests.waiting import wait_until

runner = CliRunner()


class Planted:
    """Loading its pickle runs ``open(marker, "a")``: the marker file appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'a').close()",))


def plant(run_dir: Path, weights_cache: Path, marker: Path) -> list[Path]:
    """Replace or add every file the control plane could read; returns the planted files."""
    import torch

    bomb = Planted(marker)
    planted: list[Path] = []

    def put(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        planted.append(path)

    jobs = run_dir / "jobs"
    for pickled in [*jobs.glob("*_result.pkl"), *jobs.glob("*_submitted.pkl")]:
        put(pickled, pickle.dumps(("success", bomb)))
    checkpoints = run_dir / "checkpoints"
    for checkpoint in [*checkpoints.glob("iter_*.pt"), checkpoints / "final.pt"]:
        checkpoint.unlink(missing_ok=True)
        torch.save({"model": {"w": torch.zeros(1)}, "extra": bomb}, checkpoint)
        planted.append(checkpoint)
    text_pickle = pickle.dumps(bomb, protocol=0)  # ASCII: fits text files too
    put(run_dir / "mlflow_run_id", text_pickle)
    put(run_dir / "tracking-buffer.jsonl", text_pickle + b"\n")
    put(run_dir / "tracking-buffer" / "0000beef" / "overlay.pkl", pickle.dumps(bomb))
    blob = weights_cache / "blobs" / "sha256" / ("0" * 64)
    blob.parent.mkdir(parents=True, exist_ok=True)
    torch.save(bomb, blob)
    planted.append(blob)
    put(weights_cache / "index" / ("0" * 32 + ".json"), json.dumps({
        "url": "https://example.invalid/w.pth", "sha256": "0" * 64, "size": blob.stat().st_size,
        "file_name": "w.pth", "fetched_at": "2026-01-01T00:00:00Z", "checks": {},
    }).encode())
    assert marker not in planted and not marker.exists()
    return planted


@pytest.mark.slow
def test_no_command_unpickles_planted_files(segctl_env, cityscapes_frame_root):
    recipe = write_recipe(segctl_env, cityscapes_frame_root)
    marker = segctl_env / "UNPICKLED"
    try:
        submitted = runner.invoke(app, ["submit", str(recipe), "--cluster", "local"])
        assert submitted.exit_code == 0, submitted.output
        registry = Registry(segctl_home())
        (job,) = registry.jobs()
        wait_until(lambda: controller_gone(job.job_id), timeout_s=3 * END_BOUND_S,
                   what="the training's end")
        run_dir = Path(registry.runs()[0].run_dir)
        assert (run_dir / "checkpoints" / "final.pt").is_file()
        planted = plant(run_dir, segctl_home() / "weights", marker)
        assert any(p.name.endswith("_result.pkl") for p in planted)

        def unfinished_rows() -> None:
            """A train and an eval row of the finished job, in the state a restart leaves."""
            for kind in ("train", "eval"):
                row = registry.begin_job(job.run_id, kind, "local", job.folder, None)
                registry.submitted(row, job.job_id)

        commands = [
            ["status"],
            ["status", "--json"],
            ["status", job.run_id],
            ["logs", job.run_id],
            ["logs", job.run_id, "--follow"],
            ["cancel", job.run_id],
            ["submit", str(recipe), "--cluster", "local", "--wait"],
            ["eval", job.run_id, "--cluster", "local", "--wait"],
            ["eval", job.run_id, "--cluster", "local", "--wait",
             "--checkpoint", str(run_dir / "checkpoints" / "final.pt")],
            ["report"],
            ["report", "--format", "json"],
            ["sync", job.run_id],
            ["weights", "list"],
            ["weights", "list", "--json"],
            ["recipes", "show", str(recipe)],
            ["forget", job.run_id],
        ]
        results = {}
        for command in commands:
            unfinished_rows()
            result = runner.invoke(app, command)
            results[" ".join(command)] = result
            assert not marker.exists(), (
                f"`segctl {' '.join(command)}` unpickled a planted file (exit "
                f"{result.exit_code}):\n{result.output}"
            )
        # status learnt the job's real outcome without its (planted) result pickle
        (row,) = json.loads(results["status --json"].output)
        assert row["state"] == "COMPLETED"
        # evaluation jobs had to load a planted checkpoint: they failed instead
        for command, result in results.items():
            if command.startswith("eval"):
                assert result.exit_code != 0, result.output
    finally:
        if Registry(segctl_home()).runs():
            stop_local_jobs()
    assert not marker.exists()
