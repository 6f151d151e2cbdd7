"""What every converter shares: safe writes, strict decoding, the parallel runner, progress.

Guarantees the converters build on:

* **No half-written file under a final name.** Every output is written to a sibling
  ``<name>.part-<pid>`` and renamed with :func:`os.replace` once complete; a crash leaves at
  most a ``.part-*`` file, which the next run deletes (:func:`remove_stale_parts`).
* **Resumable.** A task whose outputs all exist is skipped (they can only exist complete).
  Tiling tasks, whose outputs are only known after decoding, write a marker under
  ``DST/.segctl-prepare/`` after their last patch and are skipped when it exists.
* **Clear errors.** Bad input raises :class:`ConversionError` naming the file; the runner
  gathers the errors of all tasks and raises one :class:`ConversionError` listing them.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import cv2
import numpy as np
from PIL import Image

#: Folder (under the destination) holding the completion markers of tiling tasks.
STATE_DIR = ".segctl-prepare"
PART_TAG = ".part-"


class ConversionError(ValueError):
    """The input of a converter is unusable; the message names the offending file or folder."""


# --- writing ---------------------------------------------------------------------------------


def _part_path(path: Path) -> Path:
    return path.with_name(f"{path.name}{PART_TAG}{os.getpid()}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling and a rename (never partial)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(path)
    try:
        with open(part, "wb") as f:
            f.write(data)
        os.replace(part, path)
    finally:
        if part.exists():
            part.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode())


def encode_png(array: np.ndarray, palette: Sequence[tuple[int, int, int]] | None = None) -> bytes:
    """Encode a label map or an RGB image as PNG bytes.

    Args:
        array: ``np.uint8`` ``(H, W)`` (written as mode ``L``, or ``P`` with ``palette``) or
            ``(H, W, 3)`` RGB.
        palette: optional colours for a palette PNG; the stored indices are ``array`` itself.
    """
    if array.ndim == 3:
        ok, buf = cv2.imencode(".png", cv2.cvtColor(array, cv2.COLOR_RGB2BGR))
        if not ok:
            raise ValueError("PNG encoding failed")
        return buf.tobytes()
    if palette is None:
        ok, buf = cv2.imencode(".png", array)
        if not ok:
            raise ValueError("PNG encoding failed")
        return buf.tobytes()
    pil = Image.fromarray(array, mode="P")
    flat = [c for rgb in palette for c in rgb]
    pil.putpalette(flat + [0] * (768 - len(flat)))
    out = io.BytesIO()
    pil.save(out, format="PNG")
    return out.getvalue()


def write_png(path: Path, array: np.ndarray, palette=None) -> None:
    """Encode ``array`` (see :func:`encode_png`) and write it to ``path`` atomically."""
    atomic_write_bytes(path, encode_png(array, palette))


def copy_file(src: Path, dst: Path) -> None:
    """Place a copy of ``src`` at ``dst``: a hard link where possible, else a byte copy.

    Either way the file appears under its final name only complete.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dst)
    try:
        try:
            os.link(src, part)
        except OSError:
            shutil.copyfile(src, part)
        os.replace(part, dst)
    finally:
        if part.exists():
            part.unlink()


def remove_stale_parts(root: Path) -> int:
    """Delete ``*.part-<pid>`` files a crashed run left under ``root``; return how many."""
    if not root.is_dir():
        return 0
    n = 0
    for part in root.rglob(f"*{PART_TAG}*"):
        if part.is_file():
            part.unlink()
            n += 1
    return n


def marker_path(dst: Path, key: str) -> Path:
    """Completion marker of a tiling task ``key`` (a source file name) under ``dst``."""
    return dst / STATE_DIR / f"{key}.done"


# --- strict decoding ---------------------------------------------------------------------------


def decode_label_bytes(data: bytes, name: str) -> np.ndarray:
    """Decode a single-channel label PNG (``L``, ``P`` indices, ``I;16``) from bytes.

    Raises:
        ConversionError: the data is not a decodable image, or has colour channels.
    """
    try:
        with Image.open(io.BytesIO(data)) as pil:
            pil.load()
            label = np.array(pil)
            mode = pil.mode
    except Exception as exc:  # PIL raises several types for corrupt files
        raise ConversionError(f"{name}: cannot decode label image ({exc})") from None
    if label.ndim != 2:
        raise ConversionError(
            f"{name}: label has mode {mode} with {label.shape[-1]} channels; expected a "
            "single-channel index map"
        )
    return label


def read_label_file(path: Path) -> np.ndarray:
    """Read a single-channel label PNG strictly (see :func:`decode_label_bytes`)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConversionError(f"{path}: cannot read ({exc.strerror})") from None
    return decode_label_bytes(data, str(path))


def decode_image_bytes(data: bytes, name: str, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """Decode image bytes with OpenCV into RGB ``np.uint8 (H, W, 3)``.

    Raises:
        ConversionError: OpenCV cannot decode the data.
    """
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None:
        raise ConversionError(f"{name}: cannot decode image (corrupt or unsupported format)")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    else:
        image = cv2.cvtColor(image[..., :3], cv2.COLOR_BGR2RGB)
    return image


def read_rgb_file(path: Path) -> np.ndarray:
    """Read an image file strictly as RGB ``np.uint8 (H, W, 3)``.

    Raises:
        ConversionError: the file is missing or cannot be decoded.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConversionError(f"{path}: cannot read ({exc.strerror})") from None
    return decode_image_bytes(data, str(path))


def check_ids(label: np.ndarray, allowed: Iterable[int], name: str) -> None:
    """Raise :class:`ConversionError` naming ``name`` if ``label`` holds ids outside ``allowed``."""
    allowed_set = set(int(a) for a in allowed)
    values = np.unique(label)
    bad = [int(v) for v in values if int(v) not in allowed_set]
    if bad:
        shown = ", ".join(map(str, bad[:8])) + (" ..." if len(bad) > 8 else "")
        raise ConversionError(f"{name}: label ids outside the class set: {shown}")


def apply_lut(label: np.ndarray, lut: np.ndarray, name: str, valid: np.ndarray) -> np.ndarray:
    """Map ``label`` through ``lut`` after checking every value is ``valid``.

    Args:
        label: integer array ``(H, W)``.
        lut: ``np.uint8`` table indexed by raw id.
        name: file name for the error message.
        valid: ``bool`` table of the same length, true for raw ids the release defines.

    Raises:
        ConversionError: a value is negative, beyond the table, or not ``valid``.
    """
    values = np.unique(label)
    bad = [int(v) for v in values if v < 0 or v >= len(lut) or not valid[int(v)]]
    if bad:
        shown = ", ".join(map(str, bad[:8])) + (" ..." if len(bad) > 8 else "")
        raise ConversionError(f"{name}: label ids outside the class set: {shown}")
    return lut[label]


def colours_to_ids(
    rgb: np.ndarray,
    colour_ids: dict[tuple[int, int, int], int],
    name: str,
    unknown_id: int | None = None,
) -> np.ndarray:
    """Turn a colour-coded label ``(H, W, 3)`` RGB ``np.uint8`` into ids ``np.uint8 (H, W)``.

    One pass per palette colour (palettes here have at most ~25 colours), so a 6000x6000 tile
    converts in about a second.

    Args:
        unknown_id: id for colours outside ``colour_ids``; ``None`` (default) makes them an
            error.

    Raises:
        ConversionError: a pixel has a colour that is not in ``colour_ids`` (the message gives
            up to five such colours and how many pixels have them).
    """
    code = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    out = np.zeros(code.shape, np.uint8)
    known = np.zeros(code.shape, bool)
    for (r, g, b), idx in colour_ids.items():
        mask = code == ((r << 16) | (g << 8) | b)
        out[mask] = idx
        known |= mask
    if unknown_id is not None:
        out[~known] = unknown_id
    elif not known.all():
        values, counts = np.unique(code[~known], return_counts=True)
        order = np.argsort(-counts)[:5]
        shown = ", ".join(
            f"RGB({int(values[i]) >> 16}, {(int(values[i]) >> 8) & 255}, {int(values[i]) & 255})"
            f" ({int(counts[i])} px)"
            for i in order
        )
        raise ConversionError(f"{name}: colours that are not in the class palette: {shown}")
    return out


# --- running tasks ------------------------------------------------------------------------------


@dataclass
class Task:
    """One unit of work: ``func(*args)`` produces ``outputs`` from ``source``.

    ``func`` must be a module-level function (tasks cross process boundaries). A task is
    skipped when every path in ``outputs`` exists.
    """

    func: Callable[..., Any]
    args: tuple
    outputs: tuple[Path, ...]
    source: str

    def done(self) -> bool:
        return bool(self.outputs) and all(p.exists() for p in self.outputs)


@dataclass
class RunSummary:
    """What a :func:`run_tasks` call did: tasks run, tasks skipped as already complete."""

    done: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)


class ProgressBar:
    """A one-line text progress bar on a stream (stderr by default).

    On a terminal it redraws in place; otherwise it prints a line at every 10%, so logs stay
    short. ``total`` is a count of tasks.
    """

    def __init__(self, total: int, desc: str, stream: TextIO | None = None, width: int = 30):
        self.total = max(total, 0)
        self.desc = desc
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.count = 0
        self.start = time.monotonic()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_decile = -1

    def update(self, n: int = 1) -> None:
        self.count += n
        self._draw(final=False)

    def close(self) -> None:
        self._draw(final=True)

    def _draw(self, final: bool) -> None:
        frac = 1.0 if self.total == 0 else min(self.count / self.total, 1.0)
        decile = int(frac * 10)
        if not self.tty and not final and decile == self._last_decile:
            return
        self._last_decile = decile
        filled = int(frac * self.width)
        rate = self.count / max(time.monotonic() - self.start, 1e-9)
        line = (
            f"{self.desc} [{'#' * filled}{'.' * (self.width - filled)}] "
            f"{self.count}/{self.total} {rate:.1f}/s"
        )
        if self.tty:
            self.stream.write("\r" + line + ("\n" if final else ""))
        elif final or decile != 10:
            self.stream.write(line + "\n")
        self.stream.flush()


def run_tasks(
    tasks: Sequence[Task], workers: int = 1, desc: str = "convert", progress: bool = True
) -> RunSummary:
    """Run ``tasks`` (skipping complete ones), ``workers`` processes at a time.

    Args:
        tasks: the work; each task's errors are caught and reported with its ``source``.
        workers: processes; ``1`` runs in this process (no pool).
        desc: label of the progress bar.
        progress: draw a progress bar on stderr.

    Returns:
        A :class:`RunSummary`.

    Raises:
        ConversionError: one or more tasks failed; the message lists up to 20 of them. Outputs
            of the tasks that succeeded stay (a rerun skips them); failed tasks leave nothing.
    """
    summary = RunSummary()
    todo = []
    for task in tasks:
        if task.done():
            summary.skipped += 1
        else:
            todo.append(task)
    bar = ProgressBar(len(todo), desc) if progress and todo else None

    def record(task: Task, exc: BaseException | None) -> None:
        if exc is None:
            summary.done += 1
        elif isinstance(exc, ConversionError):
            summary.errors.append(str(exc))
        else:
            summary.errors.append(f"{task.source}: {type(exc).__name__}: {exc}")
        if bar:
            bar.update()

    if workers <= 1 or len(todo) <= 1:
        for task in todo:
            try:
                task.func(*task.args)
                record(task, None)
            except Exception as exc:  # reported per file below
                record(task, exc)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(task.func, *task.args): task for task in todo}
            for future in as_completed(futures):
                record(futures[future], future.exception())
    if bar:
        bar.close()
    if summary.errors:
        shown = "\n  ".join(sorted(summary.errors)[:20])
        more = f"\n  (and {len(summary.errors) - 20} more)" if len(summary.errors) > 20 else ""
        raise ConversionError(
            f"{len(summary.errors)} of {len(todo)} file(s) could not be converted "
            f"(the rest is complete; rerun after fixing to resume):\n  {shown}{more}"
        )
    return summary


def require_dir(path: Path, what: str) -> Path:
    """Return ``path`` if it is a folder, else raise :class:`ConversionError` naming it."""
    if not path.is_dir():
        raise ConversionError(f"{path}: {what} not found")
    return path


def require_files(files: list[Path], folder: Path, pattern: str) -> list[Path]:
    """Return ``files`` if not empty, else raise naming ``folder`` and the expected pattern."""
    if not files:
        raise ConversionError(f"{folder}: no {pattern} files (empty or wrong folder)")
    return files


def load_mat(path: Path) -> dict[str, Any]:
    """Load a MATLAB ``.mat`` file with ``scipy.io.loadmat`` (imported here, lazily).

    Raises:
        ConversionError: scipy is missing or the file cannot be read.
    """
    try:
        from scipy.io import loadmat
    except ImportError:  # pragma: no cover - scipy is a declared dependency
        raise ConversionError("reading .mat files needs scipy: pip install 'scipy>=1.10'") from None
    try:
        return loadmat(str(path))
    except Exception as exc:
        raise ConversionError(f"{path}: cannot read .mat file ({exc})") from None
