"""Regenerate ``tests/data/samples``: real photographs in the layouts of the public datasets,
with label maps made here by simple colour and position rules.

The photographs come from scikit-image's sample data (public domain or CC0; see
``tests/data/README.md``), read straight from the scikit-image wheel, which needs no install::

    .venv/bin/python -m pip download scikit-image==0.26.0 --no-deps -d /tmp/skimage
    .venv/bin/python tests/data/make_samples.py /tmp/skimage/scikit_image-0.26.0-*.whl

The photographs are checked against their sha256 (``SOURCES``); the output is deterministic
(numpy and Pillow only; no random numbers). Each ``make_*``
function below writes one dataset folder; the labels are synthetic annotations of the photos:
class names are chosen so that every layout has the kinds of values its loaders and
converters must handle, not to describe the photo faithfully.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

OUT = Path(__file__).resolve().parent / "samples"

#: The source photographs (files in the wheel's ``skimage/data/``) and their sha256.
SOURCES = {
    "rocket.jpg": "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
    "coffee.png": "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
    "chelsea.png": "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
    "astronaut.png": "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
    "camera.png": "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a",
}


class Photos:
    """The scikit-image sample photographs, from a wheel or from a folder holding them."""

    def __init__(self, source: Path) -> None:
        self.source = source

    def raw(self, name: str) -> bytes:
        if self.source.is_dir():
            return (self.source / name).read_bytes()
        with zipfile.ZipFile(self.source) as wheel:
            return wheel.read(f"skimage/data/{name}")

    def rgb(self, name: str) -> Image.Image:
        return Image.open(io.BytesIO(self.raw(name))).convert("RGB")

    def grey(self, name: str) -> Image.Image:
        return Image.open(io.BytesIO(self.raw(name))).convert("L")


# --- label making: nearest-prototype colour clusters, majority smoothing, boundaries ------------


def clusters(image: Image.Image, prototypes: list[tuple[int, ...]], blur: float = 1.5,
             iterations: int = 8) -> np.ndarray:
    """Index of the colour cluster of each pixel: k-means started from ``prototypes`` (so that
    cluster ``i`` stays the colour named by prototype ``i``) on a blurred copy of ``image``."""
    smooth = np.asarray(image.filter(ImageFilter.GaussianBlur(blur)), np.float64)
    pixels = smooth.reshape(-1, smooth.shape[-1] if smooth.ndim == 3 else 1)
    centres = np.asarray(prototypes, np.float64).reshape(len(prototypes), -1)
    for _ in range(iterations):
        index = ((pixels[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
        for k in range(len(centres)):
            members = pixels[index == k]
            if len(members):
                centres[k] = members.mean(0)
    index = ((pixels[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
    return index.reshape(smooth.shape[:2])


def _box_sum(mask: np.ndarray, radius: int) -> np.ndarray:
    padded = np.pad(mask.astype(np.int32), radius + 1, mode="edge")
    c = padded.cumsum(0).cumsum(1)
    size = 2 * radius + 1
    s = c[size:, size:] - c[:-size, size:] - c[size:, :-size] + c[:-size, :-size]
    return s[: mask.shape[0], : mask.shape[1]]


def majority(label: np.ndarray, radius: int = 2) -> np.ndarray:
    """Each pixel takes the most frequent value of its ``(2r+1)^2`` window (ties: lower value)."""
    values = np.unique(label)
    votes = np.stack([_box_sum(label == v, radius) for v in values])
    return values[votes.argmax(0)].astype(label.dtype)


def boundaries(label: np.ndarray, width: int) -> np.ndarray:
    """Pixels within ``width`` pixels of a pixel of another value."""
    edge = np.zeros(label.shape, bool)
    padded = np.pad(label, width, mode="edge")
    h, w = label.shape
    for dy in range(-width, width + 1):
        for dx in range(-width, width + 1):
            edge |= padded[width + dy: width + dy + h, width + dx: width + dx + w] != label
    return edge


def lut(index: np.ndarray, values: list[int], dtype=np.uint8) -> np.ndarray:
    return np.asarray(values, dtype)[index]


def label_by_colour(image: Image.Image, table: list[tuple[tuple[int, ...], int]],
                    blur: float = 1.5, radius: int = 2) -> np.ndarray:
    """A label map: each pixel gets the id of its colour cluster (``table``: prototype colour,
    id), then the majority of its neighbourhood of ``radius``."""
    index = clusters(image, [colour for colour, _ in table], blur)
    return majority(lut(index, [ident for _, ident in table]), radius)


def save_png(array: np.ndarray | Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = array if isinstance(array, Image.Image) else Image.fromarray(array)
    image.save(path, optimize=True)


def save_jpg(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=88, optimize=True)


def enlarge(image: Image.Image, size: tuple[int, int], factor: int) -> Image.Image:
    """``image`` resized to ``size / factor`` and enlarged back with nearest-neighbour pixels:
    large samples compress to a fraction of a full-detail PNG."""
    small = image.resize((size[0] // factor, size[1] // factor), Image.LANCZOS)
    return small.resize(size, Image.NEAREST)


# --- the datasets ---------------------------------------------------------------------------


#: Cityscapes labelId -> trainId (cityscapesScripts ``helpers/labels.py``), for ids 0..33.
CITYSCAPES_TRAIN_IDS = [255] * 7 + [0, 1, 255, 255, 2, 3, 4, 255, 255, 255, 5, 255, 6, 7, 8, 9,
                                    10, 11, 12, 13, 14, 15, 255, 255, 16, 17, 18]
CITYSCAPES_HAS_INSTANCES = {24, 25, 26, 27, 28, 29, 30, 31, 32, 33}


def make_cityscapes(photos: Photos, out: Path) -> None:
    """One 256x128 frame (the rocket launch photo, lower two thirds): labelIds, labelTrainIds
    by the official table, 16-bit instanceIds (``id * 1000 + n`` for instance classes)."""
    image = photos.rgb("rocket.jpg").crop((0, 107, 640, 427)).resize((256, 128), Image.LANCZOS)
    rgb = np.asarray(image).astype(np.int32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    h, w = r.shape
    y, x = np.mgrid[:h, :w]
    horizon = 104
    ids = np.full((h, w), 17, np.uint8)                     # pole: the towers
    ids[(b - r > 20) & (y < horizon)] = 23                  # sky
    ids[y >= horizon] = 22                                  # terrain
    ids[(y >= 116) & (x > 100) & (x < 160)] = 7             # road to the pad
    ids[(r > 150) & (g > 140) & (np.abs(r - b) < 90) & (x > 118) & (x < 140)] = 31  # the rocket
    ids[(r > 200) & (r - b > 60)] = 19                      # lamps: traffic light
    ids = majority(ids, 1)
    ids[:, :2] = 2                                           # rectification border
    ids[:, -2:] = 2
    ids[-4:, :] = 1                                          # ego vehicle
    train_ids = lut(ids, CITYSCAPES_TRAIN_IDS)
    instances = ids.astype(np.uint16)
    rocket = ids == 31
    instances[rocket] = 31 * 1000
    city = "frankfurt"
    stem = f"{city}_000000_000294"
    save_png(image, out / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png")
    gt = out / "gtFine" / "val" / city
    save_png(ids, gt / f"{stem}_gtFine_labelIds.png")
    save_png(train_ids, gt / f"{stem}_gtFine_labelTrainIds.png")
    save_png(Image.fromarray(instances), gt / f"{stem}_gtFine_instanceIds.png")


def make_ade20k(photos: Photos, out: Path) -> None:
    """Three validation pairs: JPEG images, L labels with 0 = other and 1..150 classes."""
    base = out / "ADEChallengeData2016"
    specs = [
        # photo, size, (prototype colour, ADE20K id) pairs
        ("coffee.png", (600, 400), [((150, 80, 40), 16), ((130, 25, 20), 143),
                                    ((235, 230, 225), 148), ((200, 140, 80), 121),
                                    ((35, 15, 10), 0)]),
        ("chelsea.png", (451, 300), [((170, 120, 80), 127), ((225, 215, 210), 1),
                                     ((90, 60, 40), 127), ((30, 25, 20), 0)]),
        ("astronaut.png", (400, 400), [((220, 100, 50), 13), ((200, 195, 190), 1),
                                       ((15, 15, 15), 0), ((60, 50, 130), 150),
                                       ((230, 170, 140), 13)]),
    ]
    for n, (name, size, table) in enumerate(specs, start=1):
        image = photos.rgb(name).resize(size, Image.LANCZOS)
        label = label_by_colour(image, table, radius=2)
        stem = f"ADE_val_{n:08d}"
        save_jpg(image, base / "images" / "validation" / f"{stem}.jpg")
        save_png(label, base / "annotations" / "validation" / f"{stem}.png")


def make_lip(photos: Photos, out: Path) -> None:
    """One train pair (colour JPEG) and one val pair (greyscale JPEG); labels 0..19."""
    base = out / "LIP"
    # train: the astronaut; hair 2, face 13, jumpsuit 10, background 0
    image = photos.rgb("astronaut.png").crop((110, 0, 390, 400)).resize((154, 220), Image.LANCZOS)
    table = [((200, 195, 190), 0), ((220, 100, 50), 10), ((230, 170, 140), 13),
             ((110, 70, 40), 2), ((20, 20, 20), 0), ((60, 50, 130), 0)]
    label = label_by_colour(image, table, radius=2)
    save_jpg(image, base / "train_images" / "684_2150041.jpg")
    save_png(label, base / "train_segmentations" / "684_2150041.png")
    # val: the cameraman, greyscale; coat 7, hair 2, face 13, background 0
    grey = photos.grey("camera.png").crop((110, 0, 286, 512)).resize((130, 377), Image.LANCZOS)
    v = np.asarray(grey.filter(ImageFilter.GaussianBlur(1.2))).astype(np.int32)
    h, w = v.shape
    y, x = np.mgrid[:h, :w]
    label = np.zeros((h, w), np.uint8)
    label[(v < 60) & (y > 100)] = 7
    head = (y > 40) & (y < 140) & (x > 30) & (x < 118)
    label[head & (v < 60) & (y < 100)] = 2
    label[head & (v >= 60) & (v < 200) & (y > 60)] = 13
    label = majority(label, 2)
    save_jpg(grey, base / "val_images" / "86_185913.jpg")
    save_png(label, base / "val_segmentations" / "86_185913.png")


def make_loveda(photos: Photos, out: Path) -> None:
    """Three 256x256 val tiles; labels 0 = no-data, 1..7 (background .. agricultural)."""
    specs = [
        ("coffee.png", (100, 0, 500, 400), [((150, 80, 40), 7), ((130, 25, 20), 2),
                                            ((235, 230, 225), 3), ((200, 140, 80), 5),
                                            ((35, 15, 10), 0)]),
        ("rocket.jpg", (0, 107, 320, 427), [((40, 60, 95), 4), ((25, 25, 30), 2),
                                            ((230, 200, 150), 3), ((80, 90, 110), 6),
                                            ((60, 50, 55), 7)]),
        ("chelsea.png", (151, 0, 451, 300), [((170, 120, 80), 6), ((225, 215, 210), 7),
                                             ((90, 60, 40), 1), ((30, 25, 20), 1)]),
    ]
    for n, (name, box, table) in enumerate(specs):
        image = photos.rgb(name).crop(box).resize((256, 256), Image.LANCZOS)
        label = label_by_colour(image, table, radius=2)
        save_png(image, out / "img_dir" / "val" / f"{n}.png")
        save_png(label, out / "ann_dir" / "val" / f"{n}.png")


def _isprs_label(image: Image.Image, table: list[tuple[tuple[int, ...], int]]) -> np.ndarray:
    label = label_by_colour(image, table, blur=2.5, radius=3)
    label[boundaries(label, 1)] = 0  # the eroded boundaries of the "noBoundary" labels
    return label


def make_isprs(photos: Photos, out: Path) -> None:
    """Potsdam (RGB) and Vaihingen (IRRG) 512x512 tiles as the converter cuts them; labels
    0 = boundary, 1..6 (impervious surface, building, low vegetation, tree, car, clutter)."""
    image = enlarge(photos.rgb("astronaut.png"), (512, 512), 2)
    table = [((220, 100, 50), 2), ((200, 195, 190), 1), ((15, 15, 15), 6),
             ((60, 50, 130), 4), ((230, 170, 140), 5), ((140, 120, 110), 3)]
    tile = "2_10_0_0_512_512.png"
    save_png(image, out / "potsdam" / "img_dir" / "val" / tile)
    save_png(_isprs_label(image, table), out / "potsdam" / "ann_dir" / "val" / tile)

    rgb = enlarge(photos.rgb("coffee.png").crop((100, 0, 500, 400)), (512, 512), 2)
    table = [((150, 80, 40), 3), ((130, 25, 20), 2), ((235, 230, 225), 1),
             ((200, 140, 80), 4), ((35, 15, 10), 5)]
    label = _isprs_label(rgb, table)
    r, g, _ = np.asarray(rgb, np.uint16).transpose(2, 0, 1)
    # IRRG: a false-colour composite (pseudo near-infrared = mean of red and green, red, green)
    irrg = np.stack([(r + g) // 2, r, g], -1).astype(np.uint8)
    save_png(irrg, out / "vaihingen" / "img_dir" / "val" / "area1_0_0_512_512.png")
    save_png(label, out / "vaihingen" / "ann_dir" / "val" / "area1_0_0_512_512.png")


VOC_COLOURS = {0: (0, 0, 0), 8: (64, 0, 0), 11: (192, 128, 0), 15: (192, 128, 128)}
VOC_VOID = (224, 224, 192)


def make_voc(photos: Photos, out: Path) -> None:
    """Three 513x513 images with RGB targets in the VOC colours, a 5-pixel void band (224,
    224, 192) around each object as in VOC."""
    specs = [
        ("1", "astronaut.png", (0, 0, 512, 512),
         [((200, 195, 190), 0), ((220, 100, 50), 15), ((230, 170, 140), 15),
          ((110, 70, 40), 15), ((20, 20, 20), 0), ((60, 50, 130), 0)]),
        ("23", "chelsea.png", (76, 0, 376, 300),
         [((170, 120, 80), 8), ((225, 215, 210), 0), ((90, 60, 40), 8), ((30, 25, 20), 8)]),
        ("114", "coffee.png", (100, 0, 500, 400),
         [((150, 80, 40), 11), ((130, 25, 20), 0), ((235, 230, 225), 0), ((200, 140, 80), 0),
          ((35, 15, 10), 11)]),
    ]
    for key, name, box, table in specs:
        image = enlarge(photos.rgb(name).crop(box), (513, 513), 2)
        label = label_by_colour(image, table, blur=2.5, radius=4)
        target = np.zeros(label.shape + (3,), np.uint8)
        for idx, colour in VOC_COLOURS.items():
            target[label == idx] = colour
        target[boundaries(label, 2)] = VOC_VOID
        save_png(image, out / f"{key}_image.png")
        save_png(target, out / f"{key}_target.png")


ISAID_COLOURS = {0: (0, 0, 0), 2: (0, 63, 63), 7: (0, 127, 63), 12: (0, 191, 127),
                 14: (0, 127, 255)}


def make_isaid(photos: Photos, out: Path) -> None:
    """Two raw iSAID-sized images (884x977 train, 1147x1023 val) with colour-coded semantic
    labels (``*_instance_color_RGB.png``) and instance colours (``*_instance_id_RGB.png``)."""
    specs = [
        ("train", "P0005", "rocket.jpg", (127, 0, 513, 427), (884, 977),
         [((40, 60, 95), 0), ((25, 25, 30), 7), ((200, 190, 160), 14), ((230, 200, 150), 0)]),
        ("val", "P0003", "coffee.png", (76, 0, 524, 400), (1147, 1023),
         [((150, 80, 40), 0), ((130, 25, 20), 12), ((235, 230, 225), 2), ((200, 140, 80), 2),
          ((35, 15, 10), 0)]),
    ]
    for split, key, name, box, size, table in specs:
        image = enlarge(photos.rgb(name).crop(box), size, 4)
        small = photos.rgb(name).crop(box).resize((size[0] // 4, size[1] // 4), Image.LANCZOS)
        label = label_by_colour(small, table, radius=1)
        label = np.asarray(Image.fromarray(label).resize(size, Image.NEAREST))
        colour = np.zeros(label.shape + (3,), np.uint8)
        instance = np.zeros(label.shape + (3,), np.uint8)
        for n, (idx, rgb) in enumerate(sorted(ISAID_COLOURS.items())):
            colour[label == idx] = rgb
            if idx:
                instance[label == idx] = (n * 40, 0, 0)  # one instance per class
        folder = out / split / "images"
        save_png(image, folder / f"{key}.png")
        save_png(colour, folder / f"{key}_instance_color_RGB.png")
        save_png(instance, folder / f"{key}_instance_id_RGB.png")


def make_cocostuff(photos: Photos, out: Path) -> None:
    """Two COCO-Stuff stuff pixel maps (P mode): 92..182 stuff, 183 other (things), 0
    unlabeled."""
    specs = [
        ("000000000934.png", "rocket.jpg",
         [((40, 60, 95), 157), ((25, 25, 30), 132), ((230, 200, 150), 130),
          ((200, 190, 160), 183), ((60, 50, 55), 126)]),
        ("000000013715.png", "coffee.png",
         [((150, 80, 40), 165), ((130, 25, 20), 183), ((235, 230, 225), 183),
          ((200, 140, 80), 121), ((35, 15, 10), 182)]),
    ]
    palette = []
    for i in range(256):
        palette += [(i * 37) % 256, (i * 91) % 256, (i * 157) % 256]
    for file, name, table in specs:
        image = photos.rgb(name)
        label = label_by_colour(image, table, radius=2)
        label[boundaries(label, 1)] = 0
        pil = Image.fromarray(label, mode="P")
        pil.putpalette(palette)
        save_png(pil, out / file)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path,
                        help="the scikit-image 0.26.0 wheel, or the skimage/data folder of an "
                             "unpacked one")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    photos = Photos(args.source)
    for name, expected in SOURCES.items():
        digest = hashlib.sha256(photos.raw(name)).hexdigest()
        if digest != expected:
            raise SystemExit(f"{name}: sha256 {digest}, expected {expected} (not the photo "
                             "whose licence tests/data/README.md records)")
    make_cityscapes(photos, args.out / "cityscapes")
    make_ade20k(photos, args.out / "ade20k")
    make_lip(photos, args.out / "lip")
    make_loveda(photos, args.out / "loveda")
    make_isprs(photos, args.out)
    make_voc(photos, args.out / "voc_samples")
    make_isaid(photos, args.out / "isaid_raw")
    make_cocostuff(photos, args.out / "cocostuff_labels")


if __name__ == "__main__":
    main()
