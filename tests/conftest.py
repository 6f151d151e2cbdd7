"""Shared pytest fixtures.

Real sample files live in ``../shared/data/real`` beside the checkout (see that folder's
README). Tests that need them take the ``real_data`` fixture, which skips with a clear reason
only where that folder is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = REPO_ROOT.parent / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """Path of ``../shared/data/real``; skips the test where the folder is absent."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real sample data not found at {REAL_DATA} (expected beside the checkout)")
    return REAL_DATA


@pytest.fixture
def segctl_env(tmp_path, monkeypatch) -> Path:
    """An isolated segctl state: its own SEGCTL_HOME, runs directory and embedded MLflow store.

    Returns the temporary directory holding ``home/``, ``runs/`` and ``mlflow.db``; the working
    directory is that folder too.
    """
    monkeypatch.setenv("SEGCTL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SEGCTL_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def cityscapes_frame_root(real_data, tmp_path_factory) -> Path:
    """A Cityscapes-layout root whose train and val splits both hold the one real frame."""
    import shutil

    root = tmp_path_factory.mktemp("cityscapes_frame")
    source = real_data / "cityscapes"
    for split in ("train", "val"):
        for kind in ("leftImg8bit", "gtFine"):
            src_dir = source / kind / "val" / "frankfurt"
            dst_dir = root / kind / split / "frankfurt"
            dst_dir.mkdir(parents=True)
            for f in src_dir.iterdir():
                shutil.copy(f, dst_dir / f.name)
    return root
