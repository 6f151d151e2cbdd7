"""COCO-Stuff, the 10k and the 164k releases, in the layout ``segctl data prepare`` writes.

Reference: mmsegmentation ``mmseg/datasets/coco_stuff.py`` and
``tools/dataset_converters/coco_stuff10k.py`` / ``coco_stuff164k.py``. Both layouts hold
``*_labelTrainIds.png`` label maps with the 171 train ids 0..170 and 255 unlabeled.

:class:`COCOStuff10k182Dataset` reads the same 10k files in sssegmentation's 182-class id space
(``COCOStuff10kDataset`` in ``ssseg/modules/datasets/coco.py``,
SegmentationBLWX/sssegmentation@eb1878c1: label = raw 1-based category id - 1, raw 0 ignored),
which the MCIBI COCO-Stuff configs train and test on (``num_classes = 182``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainer.data.base import Sample, SegmentationDataset
from trainer.data.convert.coco_stuff import USED_IDS
from trainer.data.listing import read_split_list

LABEL_SUFFIX = "_labelTrainIds.png"


def _train_id_to_182_lut(ignore_index: int = 255) -> np.ndarray:
    lut = np.full(256, ignore_index, np.uint8)
    for train_id, category in enumerate(USED_IDS):
        lut[train_id] = category - 1
    return lut


#: uint8 (256,) lookup table: train id t (0..170) -> sssegmentation label ``USED_IDS[t] - 1``
#: (0..181); every other value (255 unlabeled) -> 255. The exact inverse of the converter's
#: table (:data:`trainer.data.convert.coco_stuff.USED_IDS`) composed with sssegmentation's
#: ``clsid2label`` (raw id i -> i - 1).
TRAIN_ID_TO_SSSEG_182 = _train_id_to_182_lut()


def train_ids_to_sssegmentation_182(label: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """Map COCO-Stuff train ids (0..170, see the module docstring) to sssegmentation's 182-class
    labels (0..181): train id t becomes ``USED_IDS[t] - 1``; values above 170 (the unlabeled
    255) become ``ignore_index``. The 11 unannotated classes (e.g. 11 "street sign") never
    appear in the result.

    Args:
        label: integer array of any shape, usually ``np.uint8 (H, W)``.
        ignore_index: the value unlabeled pixels get, 0..255.

    Returns:
        ``np.uint8`` array of the same shape.

    Raises:
        ValueError: ``ignore_index`` outside 0..255, or a negative or > 255 label value.
    """
    if not 0 <= ignore_index <= 255:
        raise ValueError(f"ignore_index must be in 0..255, got {ignore_index}")
    if label.size and (label.min() < 0 or label.max() > 255):
        raise ValueError(f"label values must be in 0..255, got {label.min()}..{label.max()}")
    lut = TRAIN_ID_TO_SSSEG_182 if ignore_index == 255 else _train_id_to_182_lut(ignore_index)
    return lut[label.astype(np.intp, copy=False)]


class COCOStuff10kDataset(SegmentationDataset):
    """One split of COCO-Stuff 10k (9000 train, 1000 test images).

    Layout::

        ROOT/images/<name>.jpg
        ROOT/annotations/<name>_labelTrainIds.png
        ROOT/imageLists/{train,test}.txt        (one <name> per line, as released)

    Args:
        root: the folder holding ``images``, ``annotations`` and ``imageLists``.
        split: ``"train"`` or ``"test"`` (``"val"`` is accepted for ``"test"``).
        transform, reduce_zero_label, ignore_index: see :class:`SegmentationDataset`.

    Raises:
        DatasetLayoutError: a folder or split list is missing, the split is empty, or an image
            lacks its label.
    """

    layout_description = (
        "ROOT/{images/<name>.jpg, annotations/<name>" + LABEL_SUFFIX
        + ", imageLists/{train,test}.txt}"
    )

    def list_pairs(self) -> list[tuple[Path, Path]]:
        split = {"val": "test"}.get(self.split, self.split)
        if split not in ("train", "test"):
            raise self.layout_error(self.root, f"unknown split {self.split!r}; use train or test")
        list_file = self.root / "imageLists" / f"{split}.txt"
        if not list_file.is_file():
            raise self.layout_error(list_file, f"split list for {self.split!r} not found")
        for folder in ("images", "annotations"):
            if not (self.root / folder).is_dir():
                raise self.layout_error(self.root / folder, "folder does not exist")
        pairs = [
            (self.root / "images" / f"{name}.jpg", self.root / "annotations" / f"{name}{LABEL_SUFFIX}")
            for name in read_split_list(list_file)
        ]
        missing = [img for img, _ in pairs if not img.is_file()]
        if missing:
            raise self.layout_error(missing[0], f"image listed in {list_file.name} not found")
        return self.check_labels_exist(pairs)


class COCOStuff10k182Dataset(COCOStuff10kDataset):
    """COCO-Stuff 10k as :class:`COCOStuff10kDataset` (same files and splits), labels in
    sssegmentation's 182-class id space (:func:`train_ids_to_sssegmentation_182`): what the
    ``coco_stuff10k_182`` preset and the MCIBI COCO-Stuff recipes train and evaluate on.

    Items: as :class:`~trainer.data.base.SegmentationDataset`, ``label`` ``np.uint8 (H, W)``
    in 0..181 or ``ignore_index`` before the transform.
    """

    def load(self, index: int) -> Sample:
        sample = super().load(index)
        sample["label"] = train_ids_to_sssegmentation_182(sample["label"], self.ignore_index)
        return sample


class COCOStuff164kDataset(SegmentationDataset):
    """One split of COCO-Stuff 164k (118k train2017, 5k val2017 images).

    Layout::

        ROOT/images/{train2017,val2017}/<name>.jpg
        ROOT/annotations/{train2017,val2017}/<name>_labelTrainIds.png

    Args:
        root: the folder holding ``images`` and ``annotations``.
        split: ``"train"``/``"val"`` or the folder names ``"train2017"``/``"val2017"``.
        transform, reduce_zero_label, ignore_index: see :class:`SegmentationDataset`.

    Raises:
        DatasetLayoutError: a folder is missing, the split is empty, or an image lacks its label.
    """

    layout_description = (
        "ROOT/images/{train2017,val2017}/<name>.jpg with "
        "ROOT/annotations/{train2017,val2017}/<name>" + LABEL_SUFFIX
    )

    def list_pairs(self) -> list[tuple[Path, Path]]:
        folder = {"train": "train2017", "val": "val2017"}.get(self.split, self.split)
        if folder not in ("train2017", "val2017"):
            raise self.layout_error(self.root, f"unknown split {self.split!r}; use train or val")
        image_dir = self.root / "images" / folder
        label_dir = self.root / "annotations" / folder
        for path in (image_dir, label_dir):
            if not path.is_dir():
                raise self.layout_error(path, f"split folder for {self.split!r} does not exist")
        images = sorted(image_dir.glob("*.jpg"))
        if not images:
            raise self.layout_error(image_dir, "no *.jpg files")
        return self.check_labels_exist(
            [(img, label_dir / (img.stem + LABEL_SUFFIX)) for img in images]
        )
