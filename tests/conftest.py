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


def _dev_cluster(state_dir: Path, *args: str, timeout: float):
    """``slurm/dev-cluster.sh --state-dir STATE_DIR ARGS``; the completed process (not checked)."""
    import subprocess

    return subprocess.run(
        ["bash", str(SLURM_DEV_CLUSTER), "--state-dir", str(state_dir), *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )


def _slurm_conf_of(up_stdout: str) -> Path:
    """The path of the ``export SLURM_CONF=...`` line that ``dev-cluster.sh up`` prints."""
    import re

    match = re.search(r"^export SLURM_CONF=(\S+)$", up_stdout, re.MULTILINE)
    assert match, f"no export SLURM_CONF line in the output of up:\n{up_stdout}"
    return Path(match.group(1))


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A dev cluster of the session's own; yields the path of its slurm.conf.

    It lives in a fresh state directory under the session's temporary folder, so its ports are
    chosen free when it starts (``slurm/dev-cluster.sh`` records them there): a cluster that
    someone else left running (the default state directory's, another session's) is never
    reused and keeps running untouched beside it. The cluster is started here and always
    taken down at the end, also when ``up`` failed half-way. ``SLURM_CONF`` and
    ``SEGCTL_SLURM_DIR`` (so that ``dev-cluster.sh status`` or ``restart-ctld`` act on this
    cluster) are set in ``os.environ`` for the session and put back afterwards (monkeypatch is
    function-scoped). Skips where the Slurm packages are missing and apt-get is not there to
    install them.
    """
    import os

    state_dir = tmp_path_factory.mktemp("slurm")
    assert not any(state_dir.iterdir()), f"{state_dir} is not a fresh state directory"
    saved = {name: os.environ.get(name) for name in ("SLURM_CONF", "SEGCTL_SLURM_DIR")}
    try:
        up = _dev_cluster(state_dir, "up", timeout=_SLURM_UP_TIMEOUT_S)
        if up.returncode == _EXIT_NO_APT:
            pytest.skip(f"Slurm packages missing and apt-get unavailable: {up.stderr.strip()}")
        if up.returncode != 0:
            pytest.fail(f"dev-cluster.sh up failed (exit {up.returncode}):\n{up.stdout}\n{up.stderr}")
        slurm_conf = _slurm_conf_of(up.stdout)
        own = (state_dir / "etc" / "slurm.conf").resolve()
        assert slurm_conf.is_file() and slurm_conf.resolve() == own, (
            f"up printed {slurm_conf}, not the slurm.conf of the state directory {state_dir}")
        os.environ["SLURM_CONF"] = str(slurm_conf)
        os.environ["SEGCTL_SLURM_DIR"] = str(state_dir)
        yield slurm_conf
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        down = _dev_cluster(state_dir, "down", timeout=120)
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
