"""segctl's state directory, ``$SEGCTL_HOME``: the job registry (``registry.db``), site profiles
(``profiles/``), the pretrained-weights cache (``weights/``, unless a site profile names
another), ``param-counts.json`` and ``report-index.db``.

Default ``$XDG_STATE_HOME/segctl``, i.e. ``~/.local/state/segctl``. Both planes read it (a job
looks for the weights cache there when it is given none).
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
