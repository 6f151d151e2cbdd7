"""Where segctl keeps things: its state directory and the runs directory.

- ``$SEGCTL_HOME`` (default ``$XDG_STATE_HOME/segctl``, i.e. ``~/.local/state/segctl``) holds the
  job registry (``registry.db``).
- ``$SEGCTL_RUNS_DIR`` (default ``./runs`` in the working directory) holds one directory per run.
  On a cluster it must be on storage that the compute nodes share.
"""

from __future__ import annotations

import os
from pathlib import Path


def segctl_home() -> Path:
    """The state directory (created on first use by the registry)."""
    explicit = os.environ.get("SEGCTL_HOME")
    if explicit:
        return Path(explicit).expanduser().resolve()
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return (Path(xdg).expanduser() / "segctl").resolve()


def runs_dir() -> Path:
    """The directory that holds run directories (not created here)."""
    return Path(os.environ.get("SEGCTL_RUNS_DIR", "runs")).expanduser().resolve()


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the embedded SQLite store ``./mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def is_url(location: str) -> bool:
    """True for fsspec URLs such as ``s3://bucket/x`` (not for plain or ``~`` paths)."""
    return "://" in location
