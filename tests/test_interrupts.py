"""Ctrl-C at a terminal stops a waiting ``segctl submit --wait``, never the local job.

The command runs in a real pseudo-terminal, as the leader of its own session with that
terminal as its controlling terminal; Ctrl-C is the byte ``\\x03`` written to the terminal,
which the kernel's line discipline turns into SIGINT for the whole foreground process group,
exactly as a user's keyboard does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from segctl.cli import app
from segctl.io.home import segctl_home
from segctl.recipe.rundir import RunDir
from segctl.registry import Registry
from tests.trainer_runs import frame_job_yaml
from tests.waiting import wait_until

runner = CliRunner()

#: Twenty iterations: long enough for Ctrl-C to arrive while the job trains.
RECIPE = frame_job_yaml("ctrlc", "{root}", crop_size="[64, 128]", max_iters=20,
                        val_interval=20, checkpoint_interval=10)


class Terminal:
    """A command running in a pseudo-terminal that it controls; its output is collected."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        import fcntl
        import termios

        master, slave = os.openpty()

        def take_terminal() -> None:  # in the child, after setsid(): the pty becomes its tty
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.process = subprocess.Popen(
            argv, cwd=cwd, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
            preexec_fn=take_terminal, close_fds=True,
        )
        os.close(slave)
        self.master = master
        self.output = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: every holder of the terminal's other side has closed it
                return
            if not chunk:
                return
            self.output += chunk

    def text(self) -> str:
        return self.output.decode(errors="replace")

    def press_ctrl_c(self) -> None:
        os.write(self.master, b"\x03")

    def wait(self, timeout_s: float) -> int:
        code = self.process.wait(timeout=timeout_s)
        self._reader.join(timeout=10)
        os.close(self.master)
        return code


def _job_processes(controller_pid: int) -> list:
    import psutil

    controller = psutil.Process(controller_pid)
    return [controller, *controller.children(recursive=True)]


def _final_weights(run_dir: Path) -> dict:
    """``final.pt`` of a run: its model state dict (name -> tensor)."""
    return torch.load(RunDir(run_dir).final, map_location="cpu", weights_only=True)


@pytest.mark.slow  # trains twenty iterations twice, as local jobs
def test_ctrl_c_at_the_terminal_stops_the_wait_and_never_the_local_job(
        segctl_env, cityscapes_frame_root, monkeypatch):
    recipe = segctl_env / "ctrlc.yaml"
    recipe.write_text(RECIPE.format(root=cityscapes_frame_root))
    terminal = Terminal([sys.executable, "-m", "segctl", "submit", str(recipe), "--wait"],
                        cwd=segctl_env)
    try:
        registry = Registry(segctl_home())
        job = wait_until(lambda: next((j for j in registry.jobs() if j.job_id), None),
                         timeout_s=120, what="the local job to be submitted",
                         interval_s=0.05)
        run_dir = RunDir(registry.runs()[0].run_dir)
        wait_until(lambda: run_dir.read_progress().get("iteration") or 0, timeout_s=180,
                   what="the job's first iteration", interval_s=0.05)
        # held still, so that it is surely in progress when Ctrl-C arrives; a SIGINT sent to
        # it would wait, pending, and end it on release
        held = _job_processes(int(job.job_id))
        for process in held:
            process.send_signal(signal.SIGSTOP)
        try:
            terminal.press_ctrl_c()
            code = terminal.wait(timeout_s=60)
        finally:
            for process in held:
                process.send_signal(signal.SIGCONT)
    finally:
        if terminal.process.poll() is None:
            terminal.process.kill()
    text = terminal.text()
    assert code == 130, text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    run = run_dir.name
    assert f"stopped waiting; {run} is still running: `segctl status {run}`, " \
           f"`segctl logs {run} --follow`, `segctl cancel {run}`" in " ".join(text.split()), text

    def state() -> str:
        result = runner.invoke(app, ["status", run, "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)[0]["state"]

    wait_until(state, lambda s: s not in ("PENDING", "RUNNING", "SUBMITTING"), timeout_s=300,
               what="the job to end after the interrupted wait")
    assert state() == "COMPLETED", (Path(job.folder) / f"{job.job_id}_0_log.err").read_text()
    assert run_dir.read_progress()["iteration"] == 20

    # the same recipe, never interrupted, in runs of its own: the same final weights
    monkeypatch.setenv("SEGCTL_HOME", str(segctl_env / "home-2"))
    monkeypatch.setenv("SEGCTL_RUNS_DIR", str(segctl_env / "runs-2"))
    plain = runner.invoke(app, ["submit", str(recipe), "--wait"])
    assert plain.exit_code == 0, plain.output
    reference = _final_weights(segctl_env / "runs-2" / run)
    interrupted = _final_weights(run_dir)
    assert reference.keys() == interrupted.keys()
    different = [key for key in reference if not torch.equal(reference[key], interrupted[key])]
    assert not different, f"final weights differ from an uninterrupted run's: {different[:5]}"


def _sleep_briefly() -> int:
    import time

    time.sleep(1.5)
    return 1


@pytest.mark.slow  # a real local job of 1.5 s
def test_a_starting_local_controller_is_never_taken_for_a_dead_one(tmp_path):
    """The controller starts through two execve calls (segctl.local_session, then submitit's
    entry point), during which its command line reads empty: ``segctl status`` polling then
    must not call the job FAILED. Every read in its first second says alive."""
    import time

    from segctl import executors

    executor = executors.make_executor("local", tmp_path / "jobs",
                                       executors.LocalParams(timeout_min=5, gpus_per_node=0))
    with executors.interruptible_children():
        job = executor.submit(_sleep_briefly)
    dead_reads, started = 0, time.monotonic()
    while time.monotonic() - started < 1.0:
        dead_reads += not executors._local_controller_alive(job.job_id)
    assert job.result() == 1
    assert dead_reads == 0
    assert not executors._local_controller_alive(job.job_id)  # and it is gone once it ended
