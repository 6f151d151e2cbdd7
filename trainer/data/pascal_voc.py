"""Pascal VOC 2012 with the SBD augmented training set ("trainaug", 10582 images).

Reference: mmsegmentation ``mmseg/datasets/voc.py`` and ``configs/_base_/datasets/
pascal_voc12_aug.py``; the aug list as ``tools/dataset_converters/voc_aug.py`` builds it (VOC
train plus SBD train and val, minus VOC val). Labels: 0 background, 1..20 classes, 255 void.
"""

from __future__ import annotations

from pathlib import Path

from trainer.data.base import SegmentationDataset
from trainer.data.listing import find_release_folder, read_split_list

RELEASE_CHAIN = ("VOCdevkit", "VOC2012")
SPLITS = ("train", "val", "trainval", "trainaug")


class PascalVOCDataset(SegmentationDataset):
    """One split of Pascal VOC 2012 segmentation, optionally with SBD's extra labels.

    Layout::

        ROOT/VOCdevkit/VOC2012/JPEGImages/<id>.jpg
        ROOT/VOCdevkit/VOC2012/SegmentationClass/<id>.png      (VOC labels, palette or L)
        ROOT/VOCdevkit/VOC2012/SegmentationClassAug/<id>.png   (SBD labels, L)
        ROOT/VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainaug}.txt

    ``ROOT`` may also be ``VOCdevkit`` or ``VOC2012``. For ``train``/``val``/``trainval`` the
    label is ``SegmentationClass/<id>.png``. For ``trainaug`` it is the VOC label where VOC has
    one, otherwise the SBD label from ``SegmentationClassAug`` (one label per image; mmseg
    instead concatenates VOC train and the aug list, so VOC train images appear twice there).

    Args:
        root: see above.
        split: ``"train"`` (1464), ``"val"`` (1449), ``"trainval"`` or ``"trainaug"`` (10582).
        transform, reduce_zero_label, ignore_index: see :class:`SegmentationDataset`.

    Raises:
        DatasetLayoutError: release folder or split list missing, split empty, or an image
            lacks its label.
    """

    layout_description = (
        "ROOT[/VOCdevkit[/VOC2012]]/{JPEGImages/<id>.jpg, SegmentationClass/<id>.png, "
        "SegmentationClassAug/<id>.png, ImageSets/Segmentation/{train,val,trainaug}.txt}"
    )

    def list_pairs(self) -> list[tuple[Path, Path]]:
        if self.split not in SPLITS:
            raise self.layout_error(self.root, f"unknown split {self.split!r}; use one of {SPLITS}")
        base = find_release_folder(self.root, RELEASE_CHAIN, "JPEGImages")
        if base is None:
            raise self.layout_error(self.root, "no VOCdevkit/VOC2012/JPEGImages under root")
        list_file = base / "ImageSets" / "Segmentation" / f"{self.split}.txt"
        if not list_file.is_file():
            hint = " (run `segctl data prepare pascal_voc` to build it)" if self.split == "trainaug" else ""
            raise self.layout_error(list_file, f"split list for {self.split!r} not found{hint}")
        pairs = []
        for name in read_split_list(list_file):
            label = base / "SegmentationClass" / f"{name}.png"
            if self.split == "trainaug" and not label.is_file():
                label = base / "SegmentationClassAug" / f"{name}.png"
            pairs.append((base / "JPEGImages" / f"{name}.jpg", label))
        missing = [img for img, _ in pairs if not img.is_file()]
        if missing:
            raise self.layout_error(missing[0], f"image listed in {list_file.name} not found")
        return self.check_labels_exist(pairs)
