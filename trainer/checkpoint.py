"""Training checkpoints in the run directory: atomic writes, pruning, resume, weight loading.

Layout (``RUN_DIR/checkpoints/``):

- ``iter_{N:07d}.pt``: everything needed to continue after iteration N (see
  :func:`training_state`); the :data:`KEEP_LAST` newest are kept.
- ``final.pt``: the trained model's state dict only (mmsegmentation parameter names), loadable
  with ``strict=True`` by :func:`trainer.models.weights.load_segmentor_weights`: the weights
  that are evaluated, i.e. the EMA weights when ``train.ema_decay`` is set.
- ``final_raw.pt``: with EMA only, the raw (non-averaged) weights at the end of training.

Every file is written to a temporary name in the same folder, flushed, fsynced and renamed
with ``os.replace`` (:mod:`trainer.atomic`), so a reader never sees a partial file under a
final name. Every file loads
with ``torch.load(..., weights_only=True)``: RNG states are stored as tensors and plain ints.

A job that copies checkpoints elsewhere (``train.checkpoint_dir``) registers a callback with
:func:`add_save_listener`; it is called with each file's path right after the file is written
(and, for ``iter_*.pt``, after pruning), on the writing process.
"""

from __future__ import annotations

import logging
import os
import random
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.atomic import atomic_write

CHECKPOINT_DIR = "checkpoints"
FINAL_NAME = "final.pt"
FINAL_RAW_NAME = "final_raw.pt"
KEEP_LAST = 2
_ITER_RE = re.compile(r"^iter_(\d{7,})\.pt$")

log = logging.getLogger(__name__)
_listeners: dict[Path, Callable[[Path], None]] = {}


def add_save_listener(run_dir: str | Path, callback: Callable[[Path], None]) -> None:
    """Call ``callback(path)`` after every checkpoint file written in ``run_dir`` (replaces an
    earlier callback of the same run)."""
    _listeners[Path(run_dir).resolve()] = callback


def remove_save_listener(run_dir: str | Path) -> None:
    """Stop calling the callback registered for ``run_dir``."""
    _listeners.pop(Path(run_dir).resolve(), None)


def _saved(run_dir: str | Path, path: Path) -> None:
    callback = _listeners.get(Path(run_dir).resolve())
    if callback is None:
        return
    try:
        callback(path)
    except Exception as exc:  # a copy elsewhere never stops training
        log.warning("after saving %s: %s: %s", path.name, type(exc).__name__, exc)


def checkpoint_dir(run_dir: str | Path) -> Path:
    """``RUN_DIR/checkpoints``."""
    return Path(run_dir) / CHECKPOINT_DIR


def iteration_path(run_dir: str | Path, iteration: int) -> Path:
    """``RUN_DIR/checkpoints/iter_{iteration:07d}.pt``."""
    return checkpoint_dir(run_dir) / f"iter_{iteration:07d}.pt"


def final_path(run_dir: str | Path) -> Path:
    """``RUN_DIR/checkpoints/final.pt``."""
    return checkpoint_dir(run_dir) / FINAL_NAME


def iteration_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(iteration, path)`` of every ``iter_*.pt`` in the run, oldest first."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _ITER_RE.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The ``iter_*.pt`` with the highest iteration, or None when there is none."""
    found = iteration_checkpoints(run_dir)
    return found[-1][1] if found else None


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically (see :mod:`trainer.atomic`)."""
    return atomic_write(path, lambda handle: torch.save(obj, handle))


def prune(run_dir: str | Path, keep: int = KEEP_LAST) -> list[Path]:
    """Delete all but the ``keep`` newest ``iter_*.pt`` (``final.pt`` is never touched).

    Returns:
        The deleted paths.
    """
    found = [path for _, path in iteration_checkpoints(run_dir)]
    old = found[:-keep] if keep > 0 else found
    for path in old:
        path.unlink(missing_ok=True)
    return old


# --- RNG states as weights_only-loadable values ------------------------------------------------


def capture_rng_state() -> dict[str, Any]:
    """The Python, NumPy, torch CPU and (when present) CUDA generator states.

    Returns:
        A dict of tensors, ints, floats and None only (loadable with ``weights_only=True``).
    """
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {
            "version": int(version),
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss": gauss,
        },
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`; a CUDA state is restored only where CUDA is."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["internal"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(
        (
            npy["kind"],
            npy["keys"].numpy().astype(np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- training state ------------------------------------------------------------------------------


def training_state(
    *,
    model_state: Mapping[str, torch.Tensor],
    optimizer_state: Mapping[str, Any],
    iteration: int,
    rng_states: list[dict[str, Any]],
    data_state: Mapping[str, int],
    ema_state: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The dict stored in ``iter_*.pt``.

    Args:
        model_state: the unwrapped model's state dict (mmseg names).
        optimizer_state: ``optimizer.state_dict()``; its param groups carry ``base_lr``, from
            which the schedule (a pure function of the iteration) recomputes every rate.
        iteration: optimizer steps completed.
        rng_states: one :func:`capture_rng_state` per rank, indexed by rank.
        data_state: what fixes the data order (seed, batch size, world size); the order is a
            pure function of those and the iteration.
        ema_state: ``trainer.ema.ModelEMA.state_dict()`` when EMA is on (stored as ``"ema"``).
    """
    state = {
        "format": 1,
        "iteration": int(iteration),
        "model": dict(model_state),
        "optimizer": dict(optimizer_state),
        "lr_schedule": {"iteration": int(iteration)},
        "rng": list(rng_states),
        "data": dict(data_state),
    }
    if ema_state is not None:
        state["ema"] = dict(ema_state)
    return state


def save_training_state(run_dir: str | Path, state: Mapping[str, Any]) -> Path:
    """Write ``state`` to ``iter_{iteration:07d}.pt`` atomically and prune older ones."""
    path = atomic_save(dict(state), iteration_path(run_dir, state["iteration"]))
    prune(run_dir)
    _saved(run_dir, path)
    return path


def load_training_state(path: str | Path) -> dict[str, Any]:
    """Read an ``iter_*.pt`` on the CPU with ``weights_only=True``."""
    return torch.load(path, map_location="cpu", weights_only=True)


def save_final_weights(
    run_dir: str | Path, model_state: Mapping[str, torch.Tensor], name: str = FINAL_NAME
) -> Path:
    """Write a model state dict alone to ``checkpoints/<name>`` (default ``final.pt``)
    atomically."""
    path = atomic_save(
        {k: v.detach().cpu() for k, v in model_state.items()}, checkpoint_dir(run_dir) / name
    )
    _saved(run_dir, path)
    return path


def load_model_weights(path_or_url: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint from a local path or any fsspec URL (``s3://``, ``https://``, ...).

    Read on the CPU with ``weights_only=True``. Returns the loaded object as is (a state dict,
    or a container such as mmseg's ``{"meta", "state_dict", ...}``); pass it to
    :func:`trainer.models.weights.load_segmentor_weights`, which unwraps containers.

    Raises:
        FileNotFoundError: a local path does not exist.
        Whatever the fsspec backend raises for an unreachable URL.
    """
    text = os.fspath(path_or_url)
    if "://" not in text:
        return torch.load(text, map_location="cpu", weights_only=True)
    import fsspec

    with fsspec.open(text, "rb") as handle:
        return torch.load(handle, map_location="cpu", weights_only=True)
