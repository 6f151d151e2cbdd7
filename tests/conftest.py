"""Shared pytest fixtures.

Sample files in the layouts of the public datasets ship in ``tests/data/samples``: real
photographs with label maps made by ``tests/data/make_samples.py`` (sources and licences in
``tests/data/README.md``). Tests that need them take the ``real_data`` fixture (or
``cityscapes_frame_root``); they are always present.

The datasets' own files are an optional extra: ``../shared/data/real`` beside the checkout, or
the folder that the environment variable ``SEGCTL_TEST_SHARED_DATA`` names. Tests that need
them take ``shared_real_data``, which skips with a clear reason where that folder is absent,
and are marked ``real_data``. ``SEGCTL_TEST_SHARED_DATA=/nonexistent`` runs the suite as on a
fresh clone with nothing beside it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DATA = REPO_ROOT / "tests" / "data" / "samples"
SHARED_REAL_DATA = REPO_ROOT.parent / "shared" / "data" / "real"
SHARED_REAL_DATA_VARIABLE = "SEGCTL_TEST_SHARED_DATA"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """Path of ``tests/data/samples``: one folder per dataset layout (``cityscapes/``,
    ``ade20k/``, ``lip/``, ...; see ``tests/data/README.md``). Tests never write into it."""
    return SAMPLE_DATA


@pytest.fixture(scope="session")
def shared_real_data() -> Path:
    """Path of the optional extra, the datasets' own sample files: ``$SEGCTL_TEST_SHARED_DATA``
    if set, else ``../shared/data/real``; skips the test where that folder is absent."""
    import os

    path = Path(os.environ.get(SHARED_REAL_DATA_VARIABLE) or SHARED_REAL_DATA)
    if not path.is_dir():
        pytest.skip(f"optional real data not found at {path} (beside the checkout, or set "
                    f"{SHARED_REAL_DATA_VARIABLE})")
    return path


@pytest.fixture
def segctl_env(tmp_path, monkeypatch, request) -> Path:
    """An isolated segctl state: its own SEGCTL_HOME, runs directory and embedded MLflow store.

    Returns the temporary directory holding ``home/``, ``runs/`` and ``mlflow.db``; the working
    directory is that folder too. A test that does not ask for ``slurm_cluster`` does not see
    the dev cluster that an earlier test of the session started (its ``SLURM_CONF`` is
    unset), so what executor ``auto`` picks does not depend on the order tests run in.
    """
    if "slurm_cluster" not in request.fixturenames:
        monkeypatch.delenv("SLURM_CONF", raising=False)
    monkeypatch.setenv("SEGCTL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SEGCTL_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def cityscapes_frame_root(real_data, tmp_path_factory) -> Path:
    """A Cityscapes-layout root whose train and val splits both hold the one sample frame
    (copied once for the session; tests read it and never write into it)."""
    from tests.trainer_runs import one_frame_cityscapes

    return one_frame_cityscapes(real_data / "cityscapes", tmp_path_factory.mktemp("cityscapes"))


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    """An embedded MLflow store (SQLite) of the test module's own."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


# --- the development Slurm cluster (slurm/dev-cluster.sh), shared by every Slurm test module ---

SLURM_DEV_CLUSTER = REPO_ROOT / "slurm" / "dev-cluster.sh"
_EXIT_NO_APT = 4  # dev-cluster.sh: packages missing and apt-get unavailable
_SLURM_UP_TIMEOUT_S = 900  # seconds; includes a first-time apt-get install


def _dev_cluster(*args: str, timeout: float):
    import subprocess

    return subprocess.run(
        ["bash", str(SLURM_DEV_CLUSTER), *args], capture_output=True, text=True,
        timeout=timeout, check=False,
    )


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running dev cluster for the session; yields the path of its slurm.conf.

    ``SLURM_CONF`` is set to it in ``os.environ`` for the session (the previous value is put
    back afterwards; monkeypatch is function-scoped). A cluster that was already up before the
    session is left running; one started here is taken down at the end. Skips where the Slurm
    packages are missing and apt-get is not there to install them.
    """
    import os
    import re

    was_up = _dev_cluster("status", timeout=60).returncode == 0
    up = _dev_cluster("up", timeout=_SLURM_UP_TIMEOUT_S)
    if up.returncode == _EXIT_NO_APT:
        pytest.skip(f"Slurm packages missing and apt-get unavailable: {up.stderr.strip()}")
    if up.returncode != 0:
        pytest.fail(f"dev-cluster.sh up failed (exit {up.returncode}):\n{up.stdout}\n{up.stderr}")
    match = re.search(r"^export SLURM_CONF=(\S+)$", up.stdout, re.MULTILINE)
    assert match, f"no export SLURM_CONF line in the output of up:\n{up.stdout}"
    slurm_conf = Path(match.group(1))
    assert slurm_conf.is_file()
    saved = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(slurm_conf)
    try:
        yield slurm_conf
    finally:
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved
        if not was_up:
            down = _dev_cluster("down", timeout=120)
            assert down.returncode == 0, f"dev-cluster.sh down failed:\n{down.stdout}\n{down.stderr}"


# --- markers by need: `pytest -m "not slurm and not server and not slow"` is the fast tier ---

#: Fixture (direct or through another fixture) -> the marker a test using it gets.
MARKER_OF_FIXTURE = {
    "slurm_cluster": "slurm",
    "mlflow_server": "server",
    "moto_server": "server",
    "range_server": "server",
    "shared_real_data": "real_data",
}


def pytest_collection_modifyitems(items) -> None:
    """Mark each test by what it needs (``slurm``, ``server``, ``real_data``), read from the
    fixtures it uses, so no test file has to repeat it and none can forget it."""
    for item in items:
        for fixture in set(getattr(item, "fixturenames", ())) & MARKER_OF_FIXTURE.keys():
            item.add_marker(MARKER_OF_FIXTURE[fixture])
