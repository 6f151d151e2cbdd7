"""Training checkpoints in the run directory: atomic, checksummed writes; pruning; resume with
a fallback; weight loading that unpickles nothing but tensors.

Layout (``RUN_DIR/checkpoints/``):

- ``iter_{N:07d}.pt``: everything needed to continue after iteration N (see
  :func:`training_state`); the :data:`KEEP_LAST` newest are kept.
- ``final.pt``: the trained model's state dict only (mmsegmentation parameter names), loadable
  with ``strict=True`` by :func:`trainer.models.weights.load_segmentor_weights`: the weights
  that are evaluated, i.e. the EMA weights when ``train.ema_decay`` is set.
- ``final_raw.pt``: with EMA only, the raw (non-averaged) weights at the end of training.
- ``iter_{N:07d}.pt.rejected``: a checkpoint that resume found damaged or unloadable, set
  aside (kept for inspection, never loaded, pruned or copied).

Every file is written to a temporary name in the same folder, flushed, fsynced and renamed
with ``os.replace`` (:mod:`segctl.io.atomic`), so a reader never sees a partial file under a
final name. Every file loads with ``torch.load(..., weights_only=True)``: RNG states are
stored as tensors and plain ints.

Checksums: each file carries the SHA-256 of its own bytes, embedded as the zip archive's
comment (the last 78 bytes of the file: ``segctl-sha256:`` and 64 hex digits). The digest
covers every byte before the comment, i.e. the archive exactly as ``torch.save`` wrote it with
the comment's length in its end record. ``torch.load`` and :mod:`zipfile` ignore the comment.
Being inside the file, the checksum is published by the same atomic rename as the bytes it
covers (a complete file under its final name always carries its own matching checksum) and
travels with every copy (``train.checkpoint_dir``, ``cp``). By hand: ``head -c -78 FILE |
sha256sum`` prints what ``tail -c 64 FILE`` says. :func:`verify_checksum` checks it; a file
without one (written by an older segctl, or published weights) loads unverified.

Resume (:func:`find_resume_state`) takes the newest ``iter_*.pt`` whose checksum matches and
that loads; a damaged one (bytes changed, cut short) or one holding more than tensors is
logged by name, set aside as ``.rejected``, and the previous one is used. Prune
(:func:`prune`) counts only files that end complete, so a damaged newer file never costs the
last good one.

A full disk while writing gives :class:`DiskFullError`, ``No space left on device (<path>,
<bytes> bytes needed)``, where the bytes are the size of the whole file (serialization goes on
without writing once the disk is full, to count them); the partial file is removed and the
earlier checkpoints are untouched.

A job that copies checkpoints elsewhere (``train.checkpoint_dir``) passes an ``on_saved``
callable to the save functions; it is called with each file's path right after the file is
written (and, for ``iter_*.pt``, after pruning), on the writing process.

File names come from :class:`segctl.recipe.rundir.RunDir`; ``iter_*.pt`` names are matched
with :data:`segctl.recipe.rundir.ITERATION_CHECKPOINT`.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import random
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from segctl.io.atomic import atomic_write
from segctl.recipe.rundir import RunDir, checkpoint_iteration

KEEP_LAST = 2
REJECTED_SUFFIX = ".rejected"
_CHECKSUM_TAG = b"segctl-sha256:"
_COMMENT_LEN = len(_CHECKSUM_TAG) + 64  # the zip comment: tag + hex SHA-256
_EOCD = b"PK\x05\x06"  # signature of the zip end-of-central-directory record
_EOCD_LEN = 22  # its size without the comment; the comment's length is its last 2 bytes
_HASH_CHUNK = 1 << 20
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)

log = logging.getLogger(__name__)


def _saved(on_saved: Callable[[Path], None] | None, path: Path) -> None:
    """Call ``on_saved(path)``; its exceptions are logged, never raised."""
    if on_saved is None:
        return
    try:
        on_saved(path)
    except Exception as exc:  # a copy elsewhere never stops training
        log.warning("after saving %s: %s: %s", path.name, type(exc).__name__, exc)


def checkpoint_dir(run_dir: str | Path) -> Path:
    """``RUN_DIR/checkpoints`` (:attr:`RunDir.checkpoints`)."""
    return RunDir(run_dir).checkpoints


def iteration_path(run_dir: str | Path, iteration: int) -> Path:
    """``RUN_DIR/checkpoints/iter_{iteration:07d}.pt`` (:meth:`RunDir.iteration_checkpoint`)."""
    return RunDir(run_dir).iteration_checkpoint(iteration)


def final_path(run_dir: str | Path) -> Path:
    """``RUN_DIR/checkpoints/final.pt`` (:attr:`RunDir.final`)."""
    return RunDir(run_dir).final


def iteration_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(iteration, path)`` of every ``iter_*.pt`` in the run, oldest first."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        iteration = checkpoint_iteration(path.name)
        if iteration is not None:
            found.append((iteration, path))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The ``iter_*.pt`` with the highest iteration, or None when there is none."""
    found = iteration_checkpoints(run_dir)
    return found[-1][1] if found else None


# --- writing, with the checksum and a clear full-disk error ---------------------------------------


class DiskFullError(OSError):
    """The disk (or quota) filled up while a checkpoint was written; ``str()`` is
    ``No space left on device (<path>, <bytes> bytes needed)``.

    Attributes:
        errno: ``ENOSPC`` or ``EDQUOT``.
        filename: the checkpoint's final path.
        needed: the size of the whole file, in bytes.
    """

    def __init__(self, path: str | Path, needed: int, code: int = errno.ENOSPC) -> None:
        super().__init__(code, os.strerror(code))
        self.filename = str(path)
        self.needed = int(needed)

    def __str__(self) -> str:
        return f"{self.strerror} ({self.filename}, {self.needed} bytes needed)"

    def __reduce__(self):
        return type(self), (self.filename, self.needed, self.errno)


class _ChecksumWriter:
    """The file object ``torch.save`` writes to: writes straight to the descriptor ``fd``,
    hashing every byte; the archive's last 2 bytes (the comment length of the zip end record)
    are held back until :meth:`finish` replaces them with the checksum comment's length.

    Once a write fails (e.g. ``ENOSPC``), nothing more is written but bytes are still counted,
    so :meth:`finish` can say how large the whole file is.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.sha = hashlib.sha256()
        self.size = 0
        self.error: OSError | None = None
        self._held = b""
        self._tail = b""  # the last bytes seen, for the end-record check

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        n = len(view)
        if n >= 2:
            self._emit(self._held)
            self._emit(view[:-2])
            self._held = bytes(view[-2:])
        elif n:
            joined = self._held + bytes(view)
            self._emit(joined[:-2])
            self._held = joined[-2:]
        self._tail = (self._tail + bytes(view[-_EOCD_LEN:]))[-_EOCD_LEN:]
        return n

    def flush(self) -> None:
        """Nothing is buffered here."""

    def _emit(self, chunk, *, hashed: bool = True) -> None:
        if not len(chunk):
            return
        if hashed:
            self.sha.update(chunk)
        self.size += len(chunk)
        if self.error is not None:
            return
        view = memoryview(chunk)
        try:
            while len(view):
                view = view[os.write(self.fd, view):]
        except OSError as exc:
            self.error = exc

    def finish(self) -> str:
        """Write the checksum comment and fsync; returns the hex SHA-256."""
        if not (self._tail.startswith(_EOCD) and self._held == b"\0\0"):
            raise RuntimeError("torch.save did not end with a zip end record without comment")
        self._emit(struct.pack("<H", _COMMENT_LEN))
        digest = self.sha.hexdigest()
        self._emit(_CHECKSUM_TAG + digest.encode("ascii"), hashed=False)
        if self.error is None:
            try:
                os.fsync(self.fd)
            except OSError as exc:
                self.error = exc
        return digest


def _write_checksummed(handle: IO[bytes], obj: Any, path: Path) -> str:
    writer = _ChecksumWriter(handle.fileno())
    torch.save(obj, writer)
    digest = writer.finish()
    if writer.error is not None:
        code = writer.error.errno
        if code in _DISK_FULL:
            raise DiskFullError(path, writer.size, code)
        raise OSError(code, f"writing {path} failed: {writer.error.strerror or writer.error}")
    return digest


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically (see :mod:`segctl.io.atomic`), with the
    file's SHA-256 embedded (see the module's docstring).

    Raises:
        DiskFullError: no space left (or quota exceeded); the partial file is removed.
        OSError: another write error; the partial file is removed.
        Whatever ``torch.save`` raises for an object it cannot save.
    """
    path = Path(path)
    return atomic_write(path, lambda handle: _write_checksummed(handle, obj, path))


# --- checking a file -------------------------------------------------------------------------------


class CorruptCheckpointError(ValueError):
    """A checkpoint file is damaged (its checksum does not match its bytes, or it is cut
    short) or cannot be used; the message names the file and says what is wrong."""


def _tail(path: Path, size: int) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(max(size - _EOCD_LEN - _COMMENT_LEN, 0))
        return handle.read()


def verify_checksum(path: str | Path) -> bool:
    """Compare the SHA-256 embedded in the file (see the module's docstring) with its bytes.

    Returns:
        True when it matches; False when the file carries no segctl checksum (written by an
        older segctl, or not by segctl at all): nothing to verify.

    Raises:
        CorruptCheckpointError: the checksum does not match (bytes changed on disk or in a
            copy), or the checksum record itself is damaged.
        OSError: the file cannot be read.
    """
    path = Path(path)
    size = path.stat().st_size
    tail = _tail(path, size)
    record = tail[-(_EOCD_LEN + _COMMENT_LEN):]
    if len(record) < _EOCD_LEN + _COMMENT_LEN or not record.startswith(_EOCD):
        return False
    if record[_EOCD_LEN - 2:_EOCD_LEN] != struct.pack("<H", _COMMENT_LEN):
        return False
    comment = record[_EOCD_LEN:]
    if not comment.startswith(_CHECKSUM_TAG):
        return False
    expected = comment[len(_CHECKSUM_TAG):].decode("ascii", "replace")
    sha = hashlib.sha256()
    remaining = size - _COMMENT_LEN
    with open(path, "rb") as handle:
        while remaining > 0:
            chunk = handle.read(min(_HASH_CHUNK, remaining))
            if not chunk:
                break
            sha.update(chunk)
            remaining -= len(chunk)
    actual = sha.hexdigest()
    if actual != expected:
        raise CorruptCheckpointError(
            f"{path}: checksum mismatch: its bytes hash to SHA-256 {actual[:16]}..., it was "
            f"written as {expected[:16]}...; the file was damaged after it was written"
        )
    return True


def ends_complete(path: str | Path) -> bool:
    """Whether the file ends with a zip end record (with segctl's checksum comment or with
    none), as every complete checkpoint does; a file cut short does not. Reads 100 bytes; does
    not verify the checksum."""
    path = Path(path)
    try:
        size = path.stat().st_size
        tail = _tail(path, size)
    except OSError:
        return False
    plain = tail[-_EOCD_LEN:]
    if plain.startswith(_EOCD) and plain.endswith(b"\0\0"):
        return True
    record = tail[-(_EOCD_LEN + _COMMENT_LEN):]
    return (len(record) == _EOCD_LEN + _COMMENT_LEN and record.startswith(_EOCD)
            and record[_EOCD_LEN:].startswith(_CHECKSUM_TAG))


def prune(run_dir: str | Path, keep: int = KEEP_LAST) -> list[Path]:
    """Delete the ``iter_*.pt`` older than the ``keep`` newest complete ones (``final.pt`` is
    never touched).

    Only files that end complete (:func:`ends_complete`) count towards ``keep``: a newer file
    cut short is left for resume to reject, and never makes an older good one go.

    Returns:
        The deleted paths.
    """
    found = [path for _, path in iteration_checkpoints(run_dir)]
    kept = 0
    old: list[Path] = []
    for path in reversed(found):  # newest first
        if kept < keep:
            kept += ends_complete(path)
        else:
            old.append(path)
    for path in old:
        path.unlink(missing_ok=True)
    return sorted(old)


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
        iteration: optimizer steps completed. With gradient accumulation
            (``train.grad_accum_steps``) a checkpoint is only written between optimizer steps,
            so no accumulated gradient is pending: gradients are never stored, and a resumed
            run starts step ``iteration + 1`` at its first micro-batch.
        rng_states: one :func:`capture_rng_state` per rank, indexed by rank.
        data_state: what fixes the data order (seed, batch size, world size, and
            ``grad_accum_steps`` when not 1); the order is a pure function of those and the
            iteration.
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


def save_training_state(run_dir: str | Path, state: Mapping[str, Any], *,
                        on_saved: Callable[[Path], None] | None = None) -> Path:
    """Write ``state`` to ``iter_{iteration:07d}.pt`` atomically, prune older ones, then call
    ``on_saved`` with the file's path (its exceptions are logged, never raised)."""
    path = atomic_save(dict(state), iteration_path(run_dir, state["iteration"]))
    prune(run_dir)
    _saved(on_saved, path)
    return path


def load_weights_file(source: str | os.PathLike | IO[bytes], name: str | None = None) -> Any:
    """``torch.load(..., map_location="cpu", weights_only=True)`` of a local path, an fsspec
    URL (opened with ``fsspec.open``) or an open binary file: the one place segctl's jobs
    unpickle a file, and only tensors.

    Args:
        source: what to read.
        name: the file in error messages; default the path or URL.

    Returns:
        The loaded object (tensors in dicts, lists, tuples, plain numbers and strings).

    Raises:
        segctl.io.weights_cache.UnloadableWeightsError: the file holds pickled Python objects
            other than tensors, or is not a PyTorch file (cut short, another kind of file,
            unreadable); the message names it, in segctl's words
            (:func:`segctl.io.weights_cache.load_failure`).
        FileNotFoundError: a local path does not exist. Whatever fsspec raises for a URL it
            cannot open.
    """
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        name = name or text
        if "://" in text:
            import fsspec

            with fsspec.open(text, "rb") as handle:
                return _load(handle, name)
        return _load(text, name)
    return _load(source, name or getattr(source, "name", None) or "<file object>")


def _load(source, name: str) -> Any:
    # the messages are shared with the control plane's torch-free check
    # (segctl.weights.inspect_weights_file)
    from segctl.io.weights_cache import load_failure

    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:
        failure = load_failure(name, exc)
        if failure is exc:
            raise
        raise failure from None


def load_training_state(path: str | Path) -> dict[str, Any]:
    """Read an ``iter_*.pt`` on the CPU with ``weights_only=True``, after checking its
    checksum (:func:`verify_checksum`; a file without one loads unverified).

    Raises:
        CorruptCheckpointError: the checksum does not match, or the file does not hold a
            training state (:func:`training_state`).
        segctl.io.weights_cache.UnloadableWeightsError: it holds more than tensors, or is not a
            PyTorch file (e.g. cut short).
    """
    path = Path(path)
    if path.is_file():  # else the load says what it is
        verify_checksum(path)
    state = load_weights_file(path)
    if not isinstance(state, dict) or not {"iteration", "model", "optimizer"} <= set(state):
        raise CorruptCheckpointError(f"{path}: not a training state (no iteration, model and "
                                     "optimizer entries)")
    return state


@dataclass
class ResumeState:
    """What :func:`find_resume_state` found.

    Attributes:
        path: the checkpoint loaded.
        state: its contents (:func:`training_state`).
        verified: whether its checksum was verified (False: written without one).
        rejected: ``(path, reason)`` of each newer checkpoint that could not be used, newest
            first.
    """

    path: Path
    state: dict[str, Any]
    verified: bool
    rejected: list[tuple[Path, str]] = field(default_factory=list)


def find_resume_state(run_dir: str | Path) -> ResumeState | None:
    """Load the newest usable ``iter_*.pt`` of the run: newest first, each is verified
    (:func:`verify_checksum`) and loaded (:func:`load_training_state`); one that fails is
    logged as an error naming it and the reason, and the next older is tried. Moves nothing:
    see :func:`set_aside`.

    Returns:
        A :class:`ResumeState`, or None when the run has no ``iter_*.pt``.

    Raises:
        CorruptCheckpointError: there are checkpoints but none is usable; the message lists
            them with their reasons and says how to start over.
    """
    rejected: list[tuple[Path, str]] = []
    for iteration, path in reversed(iteration_checkpoints(run_dir)):
        try:
            verified = verify_checksum(path)
            state = load_training_state(path)
            if int(state["iteration"]) != iteration:
                raise CorruptCheckpointError(
                    f"{path}: holds iteration {state['iteration']}, not {iteration}")
        except FileNotFoundError:
            continue  # set aside by another rank meanwhile
        except MemoryError:
            raise  # says nothing about the file
        except Exception as exc:  # damaged, cut short, more than tensors, unreadable
            reason = str(exc)
            log.error("checkpoint %s cannot be used: %s", path.name, reason)
            rejected.append((path, reason))
            continue
        if rejected:
            log.warning("resuming from %s, the newest usable checkpoint, instead of %s", path.name,
                        ", ".join(p.name for p, _ in rejected))
        if not verified:
            log.info("%s has no checksum (written by an older segctl): loaded unverified",
                     path.name)
        return ResumeState(path, state, verified, rejected)
    if rejected:
        listed = "; ".join(reason for _, reason in rejected)
        raise CorruptCheckpointError(
            f"no usable checkpoint to resume from in {checkpoint_dir(run_dir)}: {listed}. Move "
            "these files away (or delete them) to train from iteration 0"
        )
    return None


def set_aside(paths: list[Path]) -> list[Path]:
    """Rename each rejected checkpoint to ``<name>.rejected`` (replacing an older one), so
    that it is never loaded, pruned in place of a good one, or copied; returns the new paths.
    A file that cannot be renamed is logged and left."""
    moved = []
    for path in paths:
        target = path.with_name(path.name + REJECTED_SUFFIX)
        try:
            os.replace(path, target)
        except OSError as exc:
            log.warning("could not set %s aside: %s", path.name, exc)
            continue
        log.warning("set %s aside as %s", path.name, target.name)
        moved.append(target)
    return moved


def save_final_weights(
    run_dir: str | Path, model_state: Mapping[str, torch.Tensor], *, raw: bool = False,
    on_saved: Callable[[Path], None] | None = None,
) -> Path:
    """Write a model state dict alone to ``checkpoints/final.pt`` (``final_raw.pt`` with
    ``raw``: the raw weights beside an EMA ``final.pt``) atomically, then call ``on_saved``
    with the file's path (its exceptions are logged, never raised)."""
    run = RunDir(run_dir)
    path = atomic_save(
        {k: v.detach().cpu() for k, v in model_state.items()}, run.final_raw if raw else run.final
    )
    _saved(on_saved, path)
    return path


def load_model_weights(path_or_url: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint from a local path or any fsspec URL (``s3://``, ``https://``, ...).

    Read on the CPU with ``weights_only=True`` (:func:`load_weights_file`); a local file that
    carries segctl's checksum (``final.pt``, ``iter_*.pt``) is verified first. Returns the
    loaded object as is (a state dict, or a container such as mmseg's ``{"meta",
    "state_dict", ...}``); pass it to :func:`trainer.models.weights.load_segmentor_weights`,
    which unwraps containers.

    Raises:
        FileNotFoundError: a local path does not exist.
        CorruptCheckpointError: a local file's checksum does not match.
        segctl.io.weights_cache.UnloadableWeightsError: the file holds more than tensors, or is
            not a PyTorch file.
        Whatever the fsspec backend raises for an unreachable URL.
    """
    text = os.fspath(path_or_url)
    if "://" not in text and os.path.isfile(text):  # else the load says what it is
        verify_checksum(text)
    return load_weights_file(text)
