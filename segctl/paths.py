"""Where the control plane keeps runs and tracks them: the runs directory and the default MLflow
store (the state directory, ``$SEGCTL_HOME``, is :func:`segctl.io.home.segctl_home`).

- ``$SEGCTL_RUNS_DIR`` (default ``./runs`` in the working directory) holds one directory per run.
  On a cluster it must be on storage that the compute nodes share.
"""

from __future__ import annotations

import os
from pathlib import Path

from segctl.io.tracking_store import sqlite_uri


def runs_dir() -> Path:
    """The directory that holds run directories (not created here)."""
    return Path(os.environ.get("SEGCTL_RUNS_DIR", "runs")).expanduser().resolve()


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the embedded SQLite store ``./mlflow.db``
    (:func:`sqlite_uri` of its absolute path)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or sqlite_uri(Path.cwd().resolve() / "mlflow.db")


def is_url(location: str) -> bool:
    """True for fsspec URLs such as ``s3://bucket/x`` (not for plain or ``~`` paths)."""
    return "://" in location
