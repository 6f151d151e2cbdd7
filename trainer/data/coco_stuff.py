"""COCO-Stuff, the 10k and the 164k releases, in the layout ``segctl data prepare`` writes.

Reference: mmsegmentation ``mmseg/datasets/coco_stuff.py`` and
``tools/dataset_converters/coco_stuff10k.py`` / ``coco_stuff164k.py``. Both layouts hold
``*_labelTrainIds.png`` label maps with the 171 train ids 0..170 and 255 unlabeled.
"""

from __future__ import annotations

from pathlib import Path

from trainer.data.base import SegmentationDataset
from trainer.data.listing import read_split_list

LABEL_SUFFIX = "_labelTrainIds.png"


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
