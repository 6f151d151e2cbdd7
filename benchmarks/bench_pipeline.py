"""Training input pipeline throughput, images per second on one CPU core.

Measures decode -> RandomResize(ratio 0.5..2.0) -> RandomCrop(cat_max_ratio 0.75) -> flip ->
PhotoMetricDistortion -> Normalize -> Pad -> ToTensor (:func:`trainer.data.transforms.
train_pipeline`) with ``torch.set_num_threads(1)`` and ``cv2.setNumThreads(1)``, on test
frames made by upscaling the real samples (``../shared/data/real``) to Cityscapes size
(2048x1024), stored as PNG and as JPEG (quality 95), and a real ADE20K JPEG (683x512, "ade").

Cases: crop 512x512 at scale (2048, 512) (ADE20K-style) and crop 512x512 / 1024x1024 at scale
(2048, 1024) (Cityscapes-style). The target is 150 images/s/core at 512x512.

    python benchmarks/bench_pipeline.py [--iters 40]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import torch

from trainer.data.io import read_image, read_label
from trainer.data.transforms import train_pipeline

TARGET = 150.0  # images/s/core at 512x512
REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)


def make_frames(folder: Path) -> dict[str, tuple[Path, Path]]:
    """Upscale the real Cityscapes frame to 2048x1024; write PNG and JPEG copies + label."""
    image = read_image(next((REAL / "cityscapes" / "leftImg8bit").rglob("*.png")))
    label = read_label(next((REAL / "cityscapes" / "gtFine").rglob("*_labelTrainIds.png")))
    image = cv2.resize(image, (2048, 1024), interpolation=cv2.INTER_CUBIC)
    label = cv2.resize(label, (2048, 1024), interpolation=cv2.INTER_NEAREST)
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(folder / "frame.png"), bgr)
    cv2.imwrite(str(folder / "frame.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    cv2.imwrite(str(folder / "label.png"), label)
    ade = REAL / "ade20k" / "ADEChallengeData2016"
    return {"png": (folder / "frame.png", folder / "label.png"),
            "jpg": (folder / "frame.jpg", folder / "label.png"),
            "ade": (ade / "images/validation/ADE_val_00000001.jpg",
                    ade / "annotations/validation/ADE_val_00000001.png")}


def measure(image_path: Path, label_path: Path, scale, crop, iters: int) -> tuple[float, float]:
    """(images/s including decode, images/s of the transforms alone)."""
    pipeline = train_pipeline(scale, crop, MEAN, STD, seed=0)
    decoded = {"image": read_image(image_path), "label": read_label(label_path)}
    pipeline({k: v.copy() for k, v in decoded.items()})  # warm-up
    start = time.perf_counter()
    for _ in range(iters):
        pipeline({"image": read_image(image_path), "label": read_label(label_path)})
    full = iters / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(iters):
        pipeline({k: v.copy() for k, v in decoded.items()})
    transforms_only = iters / (time.perf_counter() - start)
    return full, transforms_only


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    cases = [
        ("scale 2048x512, crop 512x512", (2048, 512), (512, 512)),
        ("scale 2048x1024, crop 512x512", (2048, 1024), (512, 512)),
        ("scale 2048x1024, crop 1024x1024", (2048, 1024), (1024, 1024)),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        frames = make_frames(Path(tmp))
        print(f"{'case':<34} {'fmt':<4} {'img/s/core':>10} {'transforms':>10} {'vs 150':>7}")
        for name, scale, crop in cases:
            for fmt, (image, label) in frames.items():
                if fmt == "ade" and crop != (512, 512):
                    continue
                full, only = measure(image, label, scale, crop, args.iters)
                ratio = f"{full / TARGET:.2f}x" if crop == (512, 512) else "-"
                print(f"{name:<34} {fmt:<4} {full:>10.1f} {only:>10.1f} {ratio:>7}")


if __name__ == "__main__":
    main()
