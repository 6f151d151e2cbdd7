"""Image decoders and staged formats, images per second on one CPU core.

What the training loader's ``read_image`` / ``read_label`` (:mod:`trainer.data.io`: OpenCV)
costs against the decoders installable as wheels, and what a lossless staged copy of a
PNG-bound dataset (Cityscapes) would decode at and weigh on disk. Every figure is beside a
reference measured in the same run: a decoder against ``cv2.imread`` of the same file, a staged
format against the original PNG. A decoder is only a candidate if its pixels equal OpenCV's
(the training input must not change): the notes say ``identical`` or the largest difference.

Files (written to a temporary folder, from ``../shared/data/real``):

- ``ade``: the real ADE20K JPEG (683x512), as stored;
- ``city-jpg``: the Cityscapes sample upscaled to 2048x1024 (cubic) plus Gaussian noise
  (sigma 2 grey levels, seed 0), JPEG quality 95;
- ``city-png``: the same frame as PNG at zlib's default level 6 (what most tools write): the
  noise brings it near the size of a real ``leftImg8bit`` PNG (11 GB for 5000 frames, ~2.2
  MB each); the plain upscaled frame would compress to a fraction of that and decode faster
  than real data does;
- ``label``: the Cityscapes ``labelTrainIds`` upscaled to 2048x1024 (nearest).

Decoders: ``cv2.imread`` (the reference), ``cv2.imdecode`` of the file's bytes, Pillow,
simplejpeg and PyTurboJPEG (JPEG), pyspng (PNG); each runs only where its module imports
(PyTurboJPEG also needs the system's ``libturbojpeg``). Staged formats for the PNG frame:
PNG at compression levels 1 and 0 (OpenCV ``IMWRITE_PNG_COMPRESSION``), uncompressed TIFF,
BMP, and raw ``.npy`` (``np.load``); the disk ratio is each file's size over the original
PNG's.

    python -m benchmarks.bench_decoders [--quick] [--iters 40]
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python benchmarks/bench_decoders.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np
import torch
from PIL import Image

from benchmarks.table import Row, row, script_main
from trainer.data.io import read_image, read_label

NAME = "decoders"
REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)


def make_files(folder: Path) -> dict[str, Path]:
    """The measured files (see the module docstring), written into ``folder``."""
    image = read_image(next((REAL / "cityscapes" / "leftImg8bit").rglob("*.png")))
    label = read_label(next((REAL / "cityscapes" / "gtFine").rglob("*_labelTrainIds.png")))
    frame = cv2.resize(image, (2048, 1024), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    frame += np.random.default_rng(0).normal(0.0, 2.0, frame.shape).astype(np.float32)
    bgr = cv2.cvtColor(np.clip(frame, 0, 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR)
    label = cv2.resize(label, (2048, 1024), interpolation=cv2.INTER_NEAREST)
    files = {"city-png": folder / "frame.png", "city-jpg": folder / "frame.jpg",
             "label": folder / "label.png"}
    cv2.imwrite(str(files["city-png"]), bgr, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    cv2.imwrite(str(files["city-jpg"]), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    cv2.imwrite(str(files["label"]), label)
    files["ade"] = next((REAL / "ade20k").rglob("ADE_val_00000001.jpg"))
    return files


def stage_copies(png: Path, folder: Path) -> dict[str, Path]:
    """Lossless copies of ``png`` in the staged formats (see the module docstring)."""
    bgr = cv2.imread(str(png), cv2.IMREAD_COLOR)
    out = {"png level 1": folder / "l1.png", "png level 0": folder / "l0.png",
           "tiff uncompressed": folder / "raw.tif", "bmp": folder / "raw.bmp",
           "npy": folder / "raw.npy"}
    cv2.imwrite(str(out["png level 1"]), bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    cv2.imwrite(str(out["png level 0"]), bgr, [cv2.IMWRITE_PNG_COMPRESSION, 0])
    cv2.imwrite(str(out["tiff uncompressed"]), bgr, [cv2.IMWRITE_TIFF_COMPRESSION, 1])
    cv2.imwrite(str(out["bmp"]), bgr)
    np.save(out["npy"], cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return out


def _cv2_rgb(path: Path) -> np.ndarray:
    return read_image(path)


def _cv2_imdecode(path: Path) -> np.ndarray:
    data = np.frombuffer(path.read_bytes(), np.uint8)
    if _RGB is not None:
        return cv2.imdecode(data, _RGB)
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _pillow(path: Path) -> np.ndarray:
    with Image.open(path) as pil:
        return np.asarray(pil.convert("RGB"))


def _pillow_label(path: Path) -> np.ndarray:
    with Image.open(path) as pil:
        return np.asarray(pil)


def _npy(path: Path) -> np.ndarray:
    return np.load(path)


def optional_decoders() -> dict[str, Callable[[Path], np.ndarray]]:
    """The wheel decoders that import here (name -> RGB decoder of a path)."""
    found: dict[str, Callable[[Path], np.ndarray]] = {}
    try:
        import simplejpeg

        found["simplejpeg"] = lambda p: simplejpeg.decode_jpeg(p.read_bytes(), colorspace="RGB")
    except ImportError:
        pass
    try:
        from turbojpeg import TJPF_RGB, TurboJPEG

        jpeg = TurboJPEG()
        found["pyturbojpeg"] = lambda p: jpeg.decode(p.read_bytes(), pixel_format=TJPF_RGB)
    except (ImportError, OSError, RuntimeError):  # no module, or no system libturbojpeg
        pass
    try:
        import pyspng

        found["pyspng"] = lambda p: pyspng.load(p.read_bytes())
    except ImportError:
        pass
    return found


def rates(jobs: dict[str, tuple[Callable[[Path], np.ndarray], Path]], iters: int,
          rounds: int = 3) -> dict[str, float]:
    """Images per second of each ``decode(path)`` job: ``rounds`` rounds of ``iters`` calls,
    the jobs taking turns within each round (so a burst of other load hits them alike), and
    the best round of each (the least disturbed)."""
    for decode, path in jobs.values():
        decode(path)
    best = dict.fromkeys(jobs, 0.0)
    for _ in range(rounds):
        for name, (decode, path) in jobs.items():
            started = time.perf_counter()
            for _ in range(iters):
                decode(path)
            best[name] = max(best[name], iters / (time.perf_counter() - started))
    return best


def _difference(a: np.ndarray, b: np.ndarray) -> str:
    if a.shape != b.shape:
        return f"shape {a.shape} != {b.shape}"
    diff = int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())
    return "identical" if diff == 0 else f"differs, max |diff| {diff}"


def rows(quick: bool = False, iters: int | None = None) -> list[Row]:
    """Decoder and staged-format rows (one thread), each against OpenCV / the original PNG."""
    iters = iters or (2 if quick else 20)
    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    out: list[Row] = []
    extra = optional_decoders()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            files = make_files(Path(tmp))
            for fmt in ("ade", "city-jpg", "city-png", "label"):
                path = files[fmt]
                is_label = fmt == "label"
                reference = read_label if is_label else _cv2_rgb
                ref_name = "trainer.data.io." + ("read_label" if is_label else "read_image")
                expected = reference(path)
                jobs = {ref_name: (reference, path),
                        "cv2.imdecode (bytes)": (
                            (lambda p: cv2.imdecode(np.frombuffer(p.read_bytes(), np.uint8),
                                                    cv2.IMREAD_UNCHANGED))
                            if is_label else _cv2_imdecode, path),
                        "pillow": (_pillow_label if is_label else _pillow, path)}
                jpeg = path.suffix == ".jpg"
                for name, fn in extra.items():
                    if (name == "pyspng") != jpeg:
                        jobs[name] = (fn, path)
                notes: dict[str, str] = {}
                for name, (fn, file) in list(jobs.items())[1:]:
                    try:
                        notes[name] = _difference(fn(file), expected)
                    except Exception as error:  # a decoder that cannot read this file
                        notes[name] = f"failed: {error}"
                        del jobs[name]
                if fmt == "city-png" and not quick:
                    original = path.stat().st_size
                    for name, staged in stage_copies(path, Path(tmp)).items():
                        decode = _npy if name == "npy" else _cv2_rgb
                        size = staged.stat().st_size
                        label = f"staged as {name}"
                        jobs[label] = (decode, staged)
                        notes[label] = (f"disk {size / original:.2f}x the PNG "
                                        f"({size / 2**20:.1f} MiB); "
                                        f"{_difference(decode(staged), expected)}")
                measured = rates(jobs, iters)
                base = measured[ref_name]
                out.append(row(NAME, f"{fmt}: {ref_name} (cv2)", base, "img/s/core", "itself",
                               base, notes=f"{path.stat().st_size / 2**20:.2f} MiB, "
                                           f"{iters} calls x best of 3 rounds"))
                for name in list(jobs)[1:]:
                    out.append(row(NAME, f"{fmt}: {name}", measured[name], "img/s/core",
                                   ref_name, base, notes=notes[name]))
                for name, note in notes.items():
                    if name not in jobs:
                        out.append(row(NAME, f"{fmt}: {name}", float("nan"), "img/s/core",
                                       ref_name, base, notes=note))
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv_threads)
    return out


def _arguments(parser) -> None:
    parser.add_argument("--iters", type=int, default=None)


if __name__ == "__main__":
    script_main(rows, __doc__, _arguments)
