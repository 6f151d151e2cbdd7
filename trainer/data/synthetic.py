"""A small procedural street-scene dataset in the Cityscapes layout, for the quickstart.

Each frame is drawn from its own seed: sky, a band of buildings and trees along a horizon,
road and sidewalk converging to a vanishing point over grass, and a few cars, people, poles
and traffic signs scaled by their distance. Every class is painted in its Cityscapes colour,
jittered per image and per object, with low- and high-frequency noise, global brightness
changes and a slight blur, so a small network can learn it but not by a colour lookup.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

GENERATOR_VERSION = 1
MARKER_NAME = "synthetic_cityscapes.json"
CITY = "synth"

# trainId -> (name, official labelId, Cityscapes colour RGB), from cityscapesScripts labels.py.
CLASSES: dict[int, tuple[str, int, tuple[int, int, int]]] = {
    0: ("road", 7, (128, 64, 128)),
    1: ("sidewalk", 8, (244, 35, 232)),
    2: ("building", 11, (70, 70, 70)),
    5: ("pole", 17, (153, 153, 153)),
    7: ("traffic sign", 20, (220, 220, 0)),
    8: ("vegetation", 21, (107, 142, 35)),
    9: ("terrain", 22, (152, 251, 152)),
    10: ("sky", 23, (70, 130, 180)),
    11: ("person", 24, (220, 20, 60)),
    13: ("car", 26, (0, 0, 142)),
}
#: The trainIds that appear in the synthetic frames (score mIoU over these).
SYNTHETIC_TRAIN_IDS: tuple[int, ...] = tuple(sorted(CLASSES))

ROAD, SIDEWALK, BUILDING, POLE, SIGN, VEGETATION, TERRAIN, SKY, PERSON, CAR = (
    0, 1, 2, 5, 7, 8, 9, 10, 11, 13)

_TRAIN_TO_LABEL_ID = np.zeros(256, dtype=np.uint8)  # 255 (unlabeled) -> labelId 0
for _train_id, (_, _label_id, _) in CLASSES.items():
    _TRAIN_TO_LABEL_ID[_train_id] = _label_id


@dataclass
class _Canvas:
    """The label map and the base colour image, drawn together shape by shape."""

    label: np.ndarray  # (H, W) uint8 trainIds
    image: np.ndarray  # (H, W, 3) uint8 RGB base colours
    rng: np.random.Generator

    def colour(self, cls: int, jitter: float = 18.0, scale: float = 1.0) -> tuple[int, ...]:
        base = np.array(CLASSES[cls][2], dtype=np.float64) * scale
        value = np.clip(base + self.rng.normal(0.0, jitter, 3), 0, 255)
        return tuple(int(v) for v in value)

    def polygon(self, points: np.ndarray, cls: int, colour: tuple[int, ...] | None = None) -> None:
        pts = [np.round(points).astype(np.int32)]
        cv2.fillPoly(self.label, pts, cls)
        cv2.fillPoly(self.image, pts, colour or self.colour(cls))

    def rect(self, x0: float, y0: float, x1: float, y1: float, cls: int,
             colour: tuple[int, ...] | None = None, paint_only: bool = False) -> None:
        p0, p1 = (int(round(x0)), int(round(y0))), (int(round(x1)), int(round(y1)))
        if not paint_only:
            cv2.rectangle(self.label, p0, p1, cls, thickness=-1)
        cv2.rectangle(self.image, p0, p1, colour or self.colour(cls), thickness=-1)

    def circle(self, x: float, y: float, r: float, cls: int,
               colour: tuple[int, ...] | None = None) -> None:
        c, radius = (int(round(x)), int(round(y))), max(1, int(round(r)))
        cv2.circle(self.label, c, radius, cls, thickness=-1)
        cv2.circle(self.image, c, radius, colour or self.colour(cls), thickness=-1)


def render_frame(height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw one street-like frame.

    Args:
        height, width: frame size in pixels.
        rng: the frame's generator (all randomness comes from it).

    Returns:
        ``(image, label)``: ``np.uint8 (H, W, 3)`` RGB and ``np.uint8 (H, W)`` trainIds
        (values in :data:`SYNTHETIC_TRAIN_IDS`).
    """
    H, W = height, width
    cv = _Canvas(np.full((H, W), SKY, np.uint8), np.zeros((H, W, 3), np.uint8), rng)
    # sky: a vertical gradient, lighter towards the horizon
    sky_top, sky_low = np.array(cv.colour(SKY, 12, 0.8)), np.array(cv.colour(SKY, 12, 1.25))
    t = np.linspace(0.0, 1.0, H, dtype=np.float32)[:, None, None]
    cv.image[:] = (sky_top * (1 - t) + sky_low * t).astype(np.uint8)

    horizon = H * rng.uniform(0.42, 0.55)
    vx = W * rng.uniform(0.35, 0.65)

    # background band: buildings and trees of varying heights along the horizon
    x = -rng.uniform(0, 0.1) * W
    while x < W:
        seg = W * rng.uniform(0.06, 0.2)
        if rng.random() < 0.6:
            top = horizon - H * rng.uniform(0.08, 0.42)
            colour = cv.colour(BUILDING, 25)
            cv.rect(x, top, x + seg, horizon + 2, BUILDING, colour)
            # windows: darker or lighter panes, still building
            win = max(2.0, seg / rng.integers(4, 8))
            shade = cv.colour(BUILDING, 10, rng.choice([0.55, 1.5]))
            for wy in np.arange(top + win * 0.6, horizon - win, win * 1.6):
                for wx in np.arange(x + win * 0.5, x + seg - win, win * 1.5):
                    cv.rect(wx, wy, wx + win * 0.8, wy + win, BUILDING, shade, paint_only=True)
        else:
            base = cv.colour(VEGETATION, 20)
            for _ in range(int(rng.integers(2, 5))):
                r = seg * rng.uniform(0.3, 0.55)
                cx = x + seg * rng.uniform(0.1, 0.9)
                cy = horizon - H * rng.uniform(0.05, 0.25)
                cv.circle(cx, cy, r, VEGETATION, base)
                cv.rect(cx - r, cy, cx + r, horizon + 2, VEGETATION, base)
        x += seg

    # ground: grass, then sidewalk and road converging to the vanishing point
    cv.rect(0, horizon, W, H, TERRAIN, cv.colour(TERRAIN, 20, 0.8))
    walk_half = W * rng.uniform(0.8, 1.2)
    road_half = W * rng.uniform(0.35, 0.55)
    cv.polygon(np.array([[vx - 3, horizon], [vx + 3, horizon],
                         [vx + walk_half, H], [vx - walk_half, H]]), SIDEWALK)
    cv.polygon(np.array([[vx - 1, horizon], [vx + 1, horizon],
                         [vx + road_half, H], [vx - road_half, H]]), ROAD)
    # lane dashes (painted, still road)
    for d in np.linspace(0.1, 1.0, 8)[::2]:
        y0, y1 = horizon + (H - horizon) * d, horizon + (H - horizon) * min(d + 0.1, 1.0)
        cv.polygon(np.array([[vx - 0.5, y0], [vx + 0.5, y0],
                             [vx + 3 * (y1 - horizon) / (H - horizon), y1],
                             [vx - 3 * (y1 - horizon) / (H - horizon), y1]]),
                   ROAD, (200, 200, 200))

    # objects, far ones first so nearer ones cover them
    objects = [(CAR, rng.uniform(0.12, 1.0)) for _ in range(int(rng.integers(1, 4)))]
    objects += [(PERSON, rng.uniform(0.15, 1.0)) for _ in range(int(rng.integers(1, 4)))]
    objects += [(POLE, rng.uniform(0.2, 1.0)) for _ in range(int(rng.integers(1, 3)))]
    for cls, depth in sorted(objects, key=lambda o: o[1]):
        yb = horizon + (H - horizon) * depth  # bottom edge in pixels
        side = rng.choice([-1.0, 1.0])
        if cls == CAR:
            cx = vx + rng.uniform(-0.8, 0.8) * road_half * depth
            cw, ch = W * 0.3 * depth, H * 0.22 * depth
            body = cv.colour(CAR, 35)
            cv.rect(cx - cw / 2, yb - ch * 0.6, cx + cw / 2, yb - ch * 0.1, CAR, body)
            cv.rect(cx - cw * 0.32, yb - ch, cx + cw * 0.32, yb - ch * 0.55, CAR, body)
            cv.rect(cx - cw * 0.28, yb - ch * 0.93, cx + cw * 0.28, yb - ch * 0.62, CAR,
                    (40, 50, 60))
            for wx in (cx - cw * 0.3, cx + cw * 0.3):
                cv.circle(wx, yb - ch * 0.12, ch * 0.13, CAR, (20, 20, 20))
        elif cls == PERSON:
            frac = rng.uniform(road_half, walk_half * 0.9) / walk_half
            cx = vx + side * frac * walk_half * depth
            ph, pw = H * 0.38 * depth, W * 0.025 * depth
            cv.rect(cx - pw, yb - ph * 0.82, cx + pw, yb, PERSON, cv.colour(PERSON, 45))
            cv.circle(cx, yb - ph * 0.9, pw * 0.9, PERSON, cv.colour(PERSON, 30, 1.0))
        else:
            cx = vx + side * (road_half + (walk_half - road_half) * 0.25) * depth
            ph, pw = H * 0.75 * depth, max(1.0, W * 0.006 * depth)
            top = yb - ph
            cv.rect(cx - pw, top, cx + pw, yb, POLE)
            size = W * 0.03 * depth + 2
            if rng.random() < 0.5:
                cv.circle(cx, top, size, SIGN)
            else:
                cv.rect(cx - size, top - size, cx + size, top + size * 0.6, SIGN)

    return _texture(cv.image, rng), cv.label


def _texture(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add brightness change, low-frequency shading and pixel noise, then blur slightly."""
    H, W = image.shape[:2]
    coarse = rng.normal(1.0, 0.12, (max(2, H // 32), max(2, W // 32), 1)).astype(np.float32)
    shading = cv2.resize(coarse, (W, H), interpolation=cv2.INTER_CUBIC)[..., None]
    gain = rng.uniform(0.7, 1.3)
    noisy = image.astype(np.float32) * shading * gain
    noisy += rng.normal(0.0, rng.uniform(4.0, 12.0), image.shape).astype(np.float32)
    out = np.clip(noisy, 0, 255).astype(np.uint8)
    return cv2.GaussianBlur(out, (3, 3), 0)


def _write_png(path: Path, array: np.ndarray) -> None:
    """Write a PNG under a temporary name, then rename it into place."""
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    if not cv2.imwrite(str(tmp), array):
        raise OSError(f"could not write {tmp}")
    os.replace(tmp, path)


def _frame_names(n_train: int, n_val: int) -> list[tuple[str, int, str]]:
    """(split, index, file stem) of every frame, e.g. ``synth_000003_000019``."""
    return [(split, i, f"{CITY}_{i:06d}_000019")
            for split, n in (("train", n_train), ("val", n_val)) for i in range(n)]


def _frame_paths(root: Path, split: str, stem: str) -> tuple[Path, Path, Path]:
    image = root / "leftImg8bit" / split / CITY / f"{stem}_leftImg8bit.png"
    labels = root / "gtFine" / split / CITY
    return (image, labels / f"{stem}_gtFine_labelTrainIds.png",
            labels / f"{stem}_gtFine_labelIds.png")


def make_synthetic_cityscapes(
    root: str | Path,
    n_train: int = 48,
    n_val: int = 12,
    size: tuple[int, int] = (256, 512),
    seed: int = 0,
) -> Path:
    """Write (or find) a procedural street-scene dataset in the Cityscapes layout.

    Files: ``ROOT/leftImg8bit/{train,val}/synth/synth_<i>_000019_leftImg8bit.png`` (RGB) with
    ``ROOT/gtFine/{train,val}/synth/..._gtFine_labelTrainIds.png`` (trainIds, classes in
    :data:`SYNTHETIC_TRAIN_IDS`) and ``..._gtFine_labelIds.png`` (official labelIds), plus a
    JSON marker ``ROOT/synthetic_cityscapes.json`` holding the parameters.

    Deterministic: frame ``i`` of a split depends only on ``(seed, split, i)`` and ``size``.
    Idempotent: when the marker matches the parameters and every file exists, nothing is
    written. Otherwise the ``synth`` city folders are cleared (only those, which this
    function owns) and regenerated; each file is written under a temporary name and renamed,
    and the marker is written last, so an interrupted run is never taken as complete.

    Args:
        root: output folder (created if missing).
        n_train, n_val: number of frames per split.
        size: ``(height, width)`` in pixels.
        seed: base seed.

    Returns:
        ``root`` as a ``Path``, ready for :class:`trainer.data.cityscapes.CityscapesDataset`.

    Raises:
        ValueError: non-positive counts or a size under 32 pixels.
    """
    if n_train < 1 or n_val < 0:
        raise ValueError(f"need n_train >= 1 and n_val >= 0, got {n_train}, {n_val}")
    height, width = int(size[0]), int(size[1])
    if height < 32 or width < 32:
        raise ValueError(f"size must be at least 32x32 pixels (h, w), got {size}")
    root = Path(root)
    params = {"generator": "synthetic_cityscapes", "version": GENERATOR_VERSION,
              "n_train": n_train, "n_val": n_val, "size": [height, width], "seed": seed}
    frames = _frame_names(n_train, n_val)
    marker = root / MARKER_NAME
    if marker.is_file():
        try:
            recorded = json.loads(marker.read_text())
        except (OSError, ValueError):
            recorded = None
        if recorded == params and all(
            p.is_file() for split, _, stem in frames for p in _frame_paths(root, split, stem)
        ):
            return root
        marker.unlink()
    for split in ("train", "val"):
        for top in ("leftImg8bit", "gtFine"):
            shutil.rmtree(root / top / split / CITY, ignore_errors=True)
            (root / top / split / CITY).mkdir(parents=True, exist_ok=True)

    split_code = {"train": 0, "val": 1}
    for split, index, stem in frames:
        rng = np.random.default_rng([seed, split_code[split], index])
        image, label = render_frame(height, width, rng)
        image_path, train_ids_path, label_ids_path = _frame_paths(root, split, stem)
        _write_png(image_path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        _write_png(train_ids_path, label)
        _write_png(label_ids_path, _TRAIN_TO_LABEL_ID[label])

    tmp = marker.with_name(f".{marker.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(params, indent=2) + "\n")
    os.replace(tmp, marker)
    return root
