"""Dataset presets: the facts of each public dataset that a recipe refers to by name.

A recipe says ``data.dataset: cityscapes``; everything the dataset fixes (classes, palette,
ignore index, normalisation, the train and test scales of the standard setup) comes from here,
typed, so a recipe carries only what it changes. This module is part of the control plane and
imports no torch.

Sources: class names and palettes follow mmsegmentation (``mmseg/datasets/cityscapes.py``,
``ade.py``, ``voc.py``, ``pascal_context.py``, ``coco_stuff.py``, ``lip.py``, ``loveda.py``,
``potsdam.py``, ``isprs.py``, ``isaid.py``); the Cityscapes train ids follow cityscapesScripts
``labels.py``; the scales are those of the mmsegmentation base configs
(``configs/_base_/datasets/*.py``: ``pascal_voc12_aug.py``, ``pascal_context.py``,
``pascal_context_59.py``, ``coco-stuff10k.py``, ``coco-stuff164k.py``, ``lip_473x473.py``,
``loveda.py``, ``potsdam.py``, ``vaihingen.py``, ``isaid.py``).

Label id spaces: every preset describes the label files that ``segctl data prepare`` writes
(and that the matching ``trainer.data`` layout reads). Where that differs from a raw release
the preset says so in a comment (COCO-Stuff: train ids 0..170 with 255 unlabeled for both
releases, so no zero-label reduction is needed).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

RGB = tuple[int, int, int]

#: ImageNet statistics on the 0..255 scale (RGB), used by every preset below.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


class DatasetPreset(BaseModel):
    """What a public dataset fixes for training and evaluation.

    Attributes:
        name: preset name used in recipes (``data.dataset``).
        layout: the on-disk layout the trainer reads (a key of ``trainer.data.DATASET_LAYOUTS``).
        classes: class names in train-id order; ``len(classes)`` is the number of classes.
        palette: one RGB colour per class, for visualisation.
        ignore_index: label value excluded from loss and metrics.
        reduce_zero_label: when true, raw label 0 becomes ``ignore_index`` and k becomes k-1
            (ADE20K, LoveDA, ISPRS as in mmsegmentation).
        mean, std: per-channel normalisation, RGB, on the 0..255 scale.
        train_scale: (long edge, short edge) in pixels that the random resize scales by its
            ratio (mmseg ``RandomResize(scale=...)``, keep ratio).
        test_scale: (long edge, short edge) in pixels the image is resized to at test time,
            keeping the ratio; multi-scale ratios multiply it.
        train_split, val_split: split names of the public release.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    layout: str
    classes: tuple[str, ...]
    palette: tuple[RGB, ...]
    ignore_index: int = 255
    reduce_zero_label: bool = False
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    train_scale: tuple[int, int]
    test_scale: tuple[int, int]
    train_split: str = "train"
    val_split: str = "val"

    @property
    def num_classes(self) -> int:
        """Number of classes (excluding the ignore index)."""
        return len(self.classes)


CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)

CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)

ADE20K_CLASSES = (
    'wall', 'building', 'sky', 'floor', 'tree', 'ceiling', 'road', 'bed', 'windowpane', 'grass',
    'cabinet', 'sidewalk', 'person', 'earth', 'door', 'table', 'mountain', 'plant', 'curtain',
    'chair', 'car', 'water', 'painting', 'sofa', 'shelf', 'house', 'sea', 'mirror', 'rug',
    'field', 'armchair', 'seat', 'fence', 'desk', 'rock', 'wardrobe', 'lamp', 'bathtub',
    'railing', 'cushion', 'base', 'box', 'column', 'signboard', 'chest of drawers', 'counter',
    'sand', 'sink', 'skyscraper', 'fireplace', 'refrigerator', 'grandstand', 'path', 'stairs',
    'runway', 'case', 'pool table', 'pillow', 'screen door', 'stairway', 'river', 'bridge',
    'bookcase', 'blind', 'coffee table', 'toilet', 'flower', 'book', 'hill', 'bench',
    'countertop', 'stove', 'palm', 'kitchen island', 'computer', 'swivel chair', 'boat', 'bar',
    'arcade machine', 'hovel', 'bus', 'towel', 'light', 'truck', 'tower', 'chandelier',
    'awning', 'streetlight', 'booth', 'television receiver', 'airplane', 'dirt track',
    'apparel', 'pole', 'land', 'bannister', 'escalator', 'ottoman', 'bottle', 'buffet',
    'poster', 'stage', 'van', 'ship', 'fountain', 'conveyer belt', 'canopy', 'washer',
    'plaything', 'swimming pool', 'stool', 'barrel', 'basket', 'waterfall', 'tent', 'bag',
    'minibike', 'cradle', 'oven', 'ball', 'food', 'step', 'tank', 'trade name', 'microwave',
    'pot', 'animal', 'bicycle', 'lake', 'dishwasher', 'screen', 'blanket', 'sculpture', 'hood',
    'sconce', 'vase', 'traffic light', 'tray', 'ashcan', 'fan', 'pier', 'crt screen', 'plate',
    'monitor', 'bulletin board', 'shower', 'radiator', 'glass', 'clock', 'flag',
)

ADE20K_PALETTE = (
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3), (120, 120, 80),
    (140, 140, 140), (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7),
    (150, 5, 61), (120, 120, 70), (8, 255, 51), (255, 6, 82), (143, 255, 140), (204, 255, 4),
    (255, 51, 7), (204, 70, 3), (0, 102, 200), (61, 230, 250), (255, 6, 51), (11, 102, 255),
    (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220), (255, 9, 92), (112, 9, 255), (8,
    255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10), (7, 255, 255), (224,
    255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8), (0, 255, 20), (255, 8,
    41), (255, 5, 153), (6, 51, 255), (235, 12, 255), (160, 150, 20), (0, 163, 255), (140, 140,
    140), (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0), (153, 255, 0),
    (0, 0, 255), (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255), (11, 200, 200), (255,
    82, 0), (0, 255, 245), (0, 61, 255), (0, 255, 112), (0, 255, 133), (255, 0, 0), (255, 163,
    0), (255, 102, 0), (194, 255, 0), (0, 143, 255), (51, 255, 0), (0, 82, 255), (0, 255, 41),
    (0, 255, 173), (10, 0, 255), (173, 255, 0), (0, 255, 153), (255, 92, 0), (255, 0, 255),
    (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20), (255, 184, 184), (0, 31, 255),
    (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194), (0, 255, 82), (0, 10, 255), (0,
    112, 255), (51, 0, 255), (0, 194, 255), (0, 122, 255), (0, 255, 163), (255, 153, 0), (0,
    255, 10), (255, 112, 0), (143, 255, 0), (82, 0, 255), (163, 255, 0), (255, 235, 0), (8, 184,
    170), (133, 0, 255), (0, 255, 92), (184, 0, 255), (255, 0, 31), (0, 184, 255), (0, 214,
    255), (255, 0, 112), (92, 255, 0), (0, 224, 255), (112, 224, 255), (70, 184, 160), (163, 0,
    255), (153, 0, 255), (71, 255, 0), (255, 0, 163), (255, 204, 0), (255, 0, 143), (0, 255,
    235), (133, 255, 0), (255, 0, 235), (245, 0, 255), (255, 0, 122), (255, 245, 0), (10, 190,
    212), (214, 255, 0), (0, 204, 255), (20, 0, 255), (255, 255, 0), (0, 153, 255), (0, 41,
    255), (0, 255, 204), (41, 0, 255), (41, 255, 0), (173, 0, 255), (0, 245, 255), (71, 0, 255),
    (122, 0, 255), (0, 255, 184), (0, 92, 255), (184, 255, 0), (0, 133, 255), (255, 214, 0),
    (25, 194, 194), (102, 255, 0), (92, 0, 255),
)


VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)

#: The VOC colour map (bit-interleaved), index k = colour of class k; 255 is void.
VOC_PALETTE = (
    (0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128),
    (0, 128, 128), (128, 128, 128), (64, 0, 0), (192, 0, 0), (64, 128, 0), (192, 128, 0),
    (64, 0, 128), (192, 0, 128), (64, 128, 128), (192, 128, 128), (0, 64, 0), (128, 64, 0),
    (0, 192, 0), (128, 192, 0), (0, 64, 128),
)

#: Train-id order of the converted files: the 59 classes sorted by their id in the 459-class
#: release, which is alphabetical (mmseg ``pascal_context.py`` since 1.x and its converter's
#: ``np.sort(_mapping)``; see open-mmlab/mmsegmentation#3021), background first.
PASCAL_CONTEXT_CLASSES = (
    "background", "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat",
    "book", "bottle", "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth",
    "computer", "cow", "cup", "curtain", "dog", "door", "fence", "floor", "flower", "food",
    "grass", "ground", "horse", "keyboard", "light", "motorbike", "mountain", "mouse", "person",
    "plate", "platform", "pottedplant", "road", "rock", "sheep", "shelves", "sidewalk", "sign",
    "sky", "snow", "sofa", "table", "track", "train", "tree", "truck", "tvmonitor", "wall",
    "water", "window", "wood",
)

PASCAL_CONTEXT_PALETTE = (
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3),
    (120, 120, 80), (140, 140, 140), (204, 5, 255), (230, 230, 230), (4, 250, 7),
    (224, 5, 255), (235, 255, 7), (150, 5, 61), (120, 120, 70), (8, 255, 51), (255, 6, 82),
    (143, 255, 140), (204, 255, 4), (255, 51, 7), (204, 70, 3), (0, 102, 200), (61, 230, 250),
    (255, 6, 51), (11, 102, 255), (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220),
    (255, 9, 92), (112, 9, 255), (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71),
    (255, 41, 10), (7, 255, 255), (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7),
    (255, 122, 8), (0, 255, 20), (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255),
    (160, 150, 20), (0, 163, 255), (140, 140, 140), (250, 10, 15), (20, 255, 0), (31, 255, 0),
    (255, 31, 0), (255, 224, 0), (153, 255, 0), (0, 0, 255), (255, 71, 0), (0, 235, 255),
    (0, 173, 255), (31, 0, 255),
)

COCO_STUFF_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack",
    "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball",
    "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair",
    "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush", "banner", "blanket",
    "branch", "bridge", "building-other", "bush", "cabinet", "cage", "cardboard", "carpet",
    "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter", "cupboard",
    "curtain", "desk-stuff", "dirt", "door-stuff", "fence", "floor-marble", "floor-other",
    "floor-stone", "floor-tile", "floor-wood", "flower", "fog", "food-other", "fruit",
    "furniture-other", "grass", "gravel", "ground-other", "hill", "house", "leaves", "light",
    "mat", "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper",
    "pavement", "pillow", "plant-other", "plastic", "platform", "playingfield", "railing",
    "railroad", "river", "road", "rock", "roof", "rug", "salad", "sand", "sea", "shelf",
    "sky-other", "skyscraper", "snow", "solid-other", "stairs", "stone", "straw",
    "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable",
    "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile",
    "wall-wood", "water-other", "waterdrops", "window-blind", "window-other", "wood",
)

COCO_STUFF_PALETTE = (
    (0, 192, 64), (0, 192, 64), (0, 64, 96), (128, 192, 192), (0, 64, 64), (0, 192, 224),
    (0, 192, 192), (128, 192, 64), (0, 192, 96), (128, 192, 64), (128, 32, 192), (0, 0, 224),
    (0, 0, 64), (0, 160, 192), (128, 0, 96), (128, 0, 192), (0, 32, 192), (128, 128, 224),
    (0, 0, 192), (128, 160, 192), (128, 128, 0), (128, 0, 32), (128, 32, 0), (128, 0, 128),
    (64, 128, 32), (0, 160, 0), (0, 0, 0), (192, 128, 160), (0, 32, 0), (0, 128, 128),
    (64, 128, 160), (128, 160, 0), (0, 128, 0), (192, 128, 32), (128, 96, 128), (0, 0, 128),
    (64, 0, 32), (0, 224, 128), (128, 0, 0), (192, 0, 160), (0, 96, 128), (128, 128, 128),
    (64, 0, 160), (128, 224, 128), (128, 128, 64), (192, 0, 32), (128, 96, 0), (128, 0, 192),
    (0, 128, 32), (64, 224, 0), (0, 0, 64), (128, 128, 160), (64, 96, 0), (0, 128, 192),
    (0, 128, 160), (192, 224, 0), (0, 128, 64), (128, 128, 32), (192, 32, 128), (0, 64, 192),
    (0, 0, 32), (64, 160, 128), (128, 64, 64), (128, 0, 160), (64, 32, 128), (128, 192, 192),
    (0, 0, 160), (192, 160, 128), (128, 192, 0), (128, 0, 96), (192, 32, 0), (128, 64, 128),
    (64, 128, 96), (64, 160, 0), (0, 64, 0), (192, 128, 224), (64, 32, 0), (0, 192, 128),
    (64, 128, 224), (192, 160, 0), (0, 192, 0), (192, 128, 96), (192, 96, 128), (0, 64, 128),
    (64, 0, 96), (64, 224, 128), (128, 64, 0), (192, 0, 224), (64, 96, 128), (128, 192, 128),
    (64, 0, 224), (192, 224, 128), (128, 192, 64), (192, 0, 96), (192, 96, 0), (128, 64, 192),
    (0, 128, 96), (0, 224, 0), (64, 64, 64), (128, 128, 224), (0, 96, 0), (64, 192, 192),
    (0, 128, 224), (128, 224, 0), (64, 192, 64), (128, 128, 96), (128, 32, 128), (64, 0, 192),
    (0, 64, 96), (0, 160, 128), (192, 0, 64), (128, 64, 224), (0, 32, 128), (192, 128, 192),
    (0, 64, 224), (128, 160, 128), (192, 128, 0), (128, 64, 32), (128, 32, 64), (192, 0, 128),
    (64, 192, 32), (0, 160, 64), (64, 0, 0), (192, 192, 160), (0, 32, 64), (64, 128, 128),
    (64, 192, 160), (128, 160, 64), (64, 128, 0), (192, 192, 32), (128, 96, 192), (64, 0, 128),
    (64, 64, 32), (0, 224, 192), (192, 0, 0), (192, 64, 160), (0, 96, 192), (192, 128, 128),
    (64, 64, 160), (128, 224, 192), (192, 128, 64), (192, 64, 32), (128, 96, 64), (192, 0, 192),
    (0, 192, 32), (64, 224, 64), (64, 0, 64), (128, 192, 160), (64, 96, 64), (64, 128, 192),
    (0, 192, 160), (192, 224, 64), (64, 128, 64), (128, 192, 32), (192, 32, 192), (64, 64, 192),
    (0, 64, 32), (64, 160, 192), (192, 64, 64), (128, 64, 160), (64, 32, 192), (192, 192, 192),
    (0, 64, 160), (192, 160, 192), (192, 192, 0), (128, 64, 96), (192, 32, 64), (192, 64, 128),
    (64, 192, 96), (64, 160, 64), (64, 64, 0),
)

#: sssegmentation's COCO-Stuff id space: the 182 names of ``COCOStuff10kDataset.classnames``
#: (SegmentationBLWX/sssegmentation@eb1878c1 ``ssseg/modules/datasets/coco.py``), label = raw
#: 1-based category id - 1, raw 0 (and 255) ignored. It keeps the 11 thing ids COCO-Stuff never
#: annotates (:data:`COCO_STUFF_UNANNOTATED_IDS`); the other 171, in order, are
#: :data:`COCO_STUFF_CLASSES`.
COCO_STUFF_182_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "street sign", "stop sign", "parking meter", "bench",
    "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "hat",
    "backpack", "umbrella", "shoe", "eye glasses", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard",
    "surfboard", "tennis racket", "bottle", "plate", "wine glass", "cup", "fork", "knife",
    "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog",
    "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "mirror", "dining table",
    "window", "desk", "toilet", "door", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "blender", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush", "hair brush",
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage",
    "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds",
    "counter", "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff", "fence",
    "floor-marble", "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower", "fog",
    "food-other", "fruit", "furniture-other", "grass", "gravel", "ground-other", "hill", "house",
    "leaves", "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net",
    "paper", "pavement", "pillow", "plant-other", "plastic", "platform", "playingfield",
    "railing", "railroad", "river", "road", "rock", "roof", "rug", "salad", "sand", "sea",
    "shelf", "sky-other", "skyscraper", "snow", "solid-other", "stairs", "stone", "straw",
    "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable",
    "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile",
    "wall-wood", "water-other", "waterdrops", "window-blind", "window-other", "wood",
)

#: The 1-based COCO-Stuff category ids without annotations (street sign, hat, shoe, eye
#: glasses, plate, mirror, window, desk, door, blender, hair brush); the same table as
#: ``trainer.data.convert.coco_stuff.UNUSED_IDS``.
COCO_STUFF_UNANNOTATED_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91)


def _coco_stuff_182_palette() -> tuple[RGB, ...]:
    """The 171-class palette at the annotated ids; black at the 11 unannotated ones."""
    colours = iter(COCO_STUFF_PALETTE)
    return tuple(
        (0, 0, 0) if cat in COCO_STUFF_UNANNOTATED_IDS else next(colours) for cat in range(1, 183)
    )


COCO_STUFF_182_PALETTE = _coco_stuff_182_palette()

LIP_CLASSES = (
    "Background", "Hat", "Hair", "Glove", "Sunglasses", "UpperClothes", "Dress", "Coat",
    "Socks", "Pants", "Jumpsuits", "Scarf", "Skirt", "Face", "Left-arm", "Right-arm",
    "Left-leg", "Right-leg", "Left-shoe", "Right-shoe",
)

LIP_PALETTE = (
    (0, 0, 0), (128, 0, 0), (255, 0, 0), (0, 85, 0), (170, 0, 51), (255, 85, 0), (0, 0, 85),
    (0, 119, 221), (85, 85, 0), (0, 85, 85), (85, 51, 0), (52, 86, 128), (0, 128, 0),
    (0, 0, 255), (51, 170, 221), (0, 255, 255), (85, 255, 170), (170, 255, 85), (255, 255, 0),
    (255, 170, 0),
)

LOVEDA_CLASSES = (
    "background", "building", "road", "water", "barren", "forest", "agricultural",
)

LOVEDA_PALETTE = (
    (255, 255, 255), (255, 0, 0), (255, 255, 0), (0, 0, 255), (159, 129, 183), (0, 255, 0),
    (255, 195, 128),
)

#: ISPRS Potsdam and Vaihingen share classes and colours (mmseg ``isprs.py``/``potsdam.py``).
ISPRS_CLASSES = (
    "impervious_surface", "building", "low_vegetation", "tree", "car", "clutter",
)

ISPRS_PALETTE = (
    (255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0),
)

ISAID_CLASSES = (
    "background", "ship", "store_tank", "baseball_diamond", "tennis_court",
    "basketball_court", "Ground_Track_Field", "Bridge", "Large_Vehicle", "Small_Vehicle",
    "Helicopter", "Swimming_pool", "Roundabout", "Soccer_ball_field", "plane", "Harbor",
)

#: iSAID colours: also the colours of the release's ``*_instance_color_RGB.png`` semantic maps.
ISAID_PALETTE = (
    (0, 0, 0), (0, 0, 63), (0, 63, 63), (0, 63, 0), (0, 63, 127), (0, 63, 191), (0, 63, 255),
    (0, 127, 63), (0, 127, 127), (0, 0, 127), (0, 0, 191), (0, 0, 255), (0, 191, 127),
    (0, 127, 191), (0, 127, 255), (0, 100, 155),
)


DATASET_PRESETS: dict[str, DatasetPreset] = {
    p.name: p
    for p in (
        DatasetPreset(
            name="cityscapes",
            layout="cityscapes",
            classes=CITYSCAPES_CLASSES,
            palette=CITYSCAPES_PALETTE,
            train_scale=(2048, 1024),
            test_scale=(2048, 1024),
        ),
        DatasetPreset(
            name="ade20k",
            layout="ade20k",
            classes=ADE20K_CLASSES,
            palette=ADE20K_PALETTE,
            reduce_zero_label=True,
            train_scale=(2048, 512),
            test_scale=(2048, 512),
            train_split="train",
            val_split="val",
        ),
        DatasetPreset(
            # VOC2012 train (1464) + SBD aug = 10582 "trainaug" images, val 1449
            # (mmseg pascal_voc12_aug.py); labels 0..20, 255 void.
            name="pascal_voc",
            layout="pascal_voc",
            classes=VOC_CLASSES,
            palette=VOC_PALETTE,
            train_scale=(2048, 512),
            test_scale=(2048, 512),
            train_split="trainaug",
            val_split="val",
        ),
        DatasetPreset(
            # 59 most frequent classes + background as class 0 (mmseg pascal_context.py).
            name="pascal_context",
            layout="pascal_context",
            classes=PASCAL_CONTEXT_CLASSES,
            palette=PASCAL_CONTEXT_PALETTE,
            train_scale=(520, 520),
            test_scale=(520, 520),
        ),
        DatasetPreset(
            # Same files as pascal_context; background (0) ignored, classes shift to 0..58
            # (mmseg pascal_context_59.py).
            name="pascal_context_59",
            layout="pascal_context",
            classes=PASCAL_CONTEXT_CLASSES[1:],
            palette=PASCAL_CONTEXT_PALETTE[1:],
            reduce_zero_label=True,
            train_scale=(520, 520),
            test_scale=(520, 520),
        ),
        DatasetPreset(
            # 9k train / 1k test (imageLists/{train,test}.txt). Our converter writes train ids
            # 0..170 with 255 unlabeled (mmseg writes 1..171 and reduces zero: same result).
            name="coco_stuff10k",
            layout="coco_stuff10k",
            classes=COCO_STUFF_CLASSES,
            palette=COCO_STUFF_PALETTE,
            train_scale=(2048, 512),
            test_scale=(2048, 512),
            train_split="train",
            val_split="test",
        ),
        DatasetPreset(
            # The files `segctl data prepare coco_stuff10k` writes, read in sssegmentation's
            # 182-class id space (COCO_STUFF_182_CLASSES; trainer.data.coco_stuff maps each
            # train id back to its category id - 1), as the MCIBI configs train and test:
            # num_classes 182, the 11 unannotated classes never in a label.
            name="coco_stuff10k_182",
            layout="coco_stuff10k_182",
            classes=COCO_STUFF_182_CLASSES,
            palette=COCO_STUFF_182_PALETTE,
            train_scale=(2048, 512),
            test_scale=(2048, 512),
            train_split="train",
            val_split="test",
        ),
        DatasetPreset(
            # train2017 / val2017; train ids 0..170, 255 unlabeled (mmseg coco_stuff164k.py).
            name="coco_stuff164k",
            layout="coco_stuff164k",
            classes=COCO_STUFF_CLASSES,
            palette=COCO_STUFF_PALETTE,
            train_scale=(2048, 512),
            test_scale=(2048, 512),
        ),
        DatasetPreset(
            # mmseg lip_473x473.py: RandomResize scale (520, 520) ratio (0.75, 1.25), crop 473,
            # test Resize (473, 473). Labels 0..19, 0 = background is a class.
            name="lip",
            layout="lip",
            classes=LIP_CLASSES,
            palette=LIP_PALETTE,
            train_scale=(520, 520),
            test_scale=(473, 473),
        ),
        DatasetPreset(
            # Raw labels 0 = no-data, 1..7 classes. mmseg loveda.py trains at scale (2048, 512)
            # and tests at (1024, 1024) (the tiles are 1024x1024).
            name="loveda",
            layout="loveda",
            classes=LOVEDA_CLASSES,
            palette=LOVEDA_PALETTE,
            reduce_zero_label=True,
            train_scale=(2048, 512),
            test_scale=(1024, 1024),
        ),
        DatasetPreset(
            # 512x512 patches (stride 256); raw 0 = boundary/ignore, 1..6 classes.
            name="potsdam",
            layout="potsdam",
            classes=ISPRS_CLASSES,
            palette=ISPRS_PALETTE,
            reduce_zero_label=True,
            train_scale=(512, 512),
            test_scale=(512, 512),
        ),
        DatasetPreset(
            # Same classes and patching as Potsdam; images are IRRG.
            name="vaihingen",
            layout="vaihingen",
            classes=ISPRS_CLASSES,
            palette=ISPRS_PALETTE,
            reduce_zero_label=True,
            train_scale=(512, 512),
            test_scale=(512, 512),
        ),
        DatasetPreset(
            # 896x896 patches (overlap 384); 15 classes + background as class 0.
            name="isaid",
            layout="isaid",
            classes=ISAID_CLASSES,
            palette=ISAID_PALETTE,
            train_scale=(896, 896),
            test_scale=(896, 896),
        ),
    )
}
