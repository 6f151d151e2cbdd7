"""Parameter counts of the model presets, for ``segctl recipes list``.

A count comes from building the model on PyTorch's meta device (no memory, no weights), which
costs torch's import plus up to a few seconds per model (InternImage-H: ~1.1B parameters).
Counts are kept in ``$SEGCTL_HOME/param-counts.json`` under a fingerprint of the model code
(the size and modification time of every file under ``trainer/models/``), so a listing after
the first answers without importing torch, and any change to the model code counts again.
A cache that cannot be read or written is ignored: the counts are then computed each time.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from segctl.io.home import segctl_home

CACHE_FILE = "param-counts.json"
#: Where the architectures live; the package sits beside ``segctl`` (editable or installed).
MODELS_DIR = Path(__file__).resolve().parents[1] / "trainer" / "models"


def models_fingerprint(models_dir: Path = MODELS_DIR) -> str:
    """A short hash of the path, size and mtime (ns) of every ``.py`` file under
    ``models_dir``: it changes whenever the model code does."""
    digest = hashlib.sha256()
    for path in sorted(models_dir.rglob("*.py")):
        stat = path.stat()
        digest.update(f"{path.relative_to(models_dir)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


class ParameterCounts:
    """Parameter counts per ``(model preset, number of classes)``, cached on disk.

    Args:
        cache_path: the JSON cache (default ``$SEGCTL_HOME/param-counts.json``).
        fingerprint: the model-code fingerprint the cached counts must carry (default
            :func:`models_fingerprint`).
    """

    def __init__(self, cache_path: Path | None = None, fingerprint: str | None = None) -> None:
        self.cache_path = cache_path or segctl_home() / CACHE_FILE
        self.fingerprint = fingerprint or models_fingerprint()
        self.counts = self._read()
        self.computed = 0  # models built in this process (the rest came from the cache)

    def _read(self) -> dict[str, int]:
        try:
            stored = json.loads(self.cache_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(stored, dict) or stored.get("fingerprint") != self.fingerprint:
            return {}
        counts = stored.get("counts")
        return dict(counts) if isinstance(counts, dict) else {}

    def get(self, model: str, num_classes: int) -> int:
        """The number of parameters of preset ``model`` built for ``num_classes`` classes.

        Raises:
            KeyError: ``model`` is not a model preset.
        """
        key = f"{model}/{num_classes}"
        if key not in self.counts:
            import torch  # only when a count is missing

            from trainer.models import build_segmentor, count_parameters

            with torch.device("meta"):
                self.counts[key] = count_parameters(build_segmentor(model, num_classes))
            self.computed += 1
        return self.counts[key]

    def save(self) -> None:
        """Write the cache (atomically) if this process computed a count; never raises."""
        if not self.computed:
            return
        from segctl.io.atomic import atomic_write_json

        try:
            atomic_write_json(self.cache_path, {"fingerprint": self.fingerprint,
                                                "counts": self.counts})
        except OSError:
            pass  # a read-only state directory: counted again next time
