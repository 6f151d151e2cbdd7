"""Pascal Context (VOC2010 images, 59 frequent classes plus background).

Reference: mmsegmentation ``mmseg/datasets/pascal_context.py`` (``PascalContextDataset``: 60
classes with background 0; ``PascalContextDataset59``: the same files with
``reduce_zero_label=True``) and ``tools/dataset_converters/pascal_context.py`` (the 459 -> 59
mapping that writes ``SegmentationClassContext``).
"""

from __future__ import annotations

from pathlib import Path

from trainer.data.base import SegmentationDataset
from trainer.data.listing import find_release_folder, read_split_list

RELEASE_CHAIN = ("VOCdevkit", "VOC2010")
SPLITS = ("train", "val")


class PascalContextDataset(SegmentationDataset):
    """One split of Pascal Context; labels 0 = background, 1..59 classes (alphabetical order).

    Layout::

        ROOT/VOCdevkit/VOC2010/JPEGImages/<id>.jpg
        ROOT/VOCdevkit/VOC2010/SegmentationClassContext/<id>.png
        ROOT/VOCdevkit/VOC2010/ImageSets/SegmentationContext/{train,val}.txt

    ``ROOT`` may also be ``VOCdevkit`` or ``VOC2010``. The 60-class setup reads the files as
    they are; the 59-class setup passes ``reduce_zero_label=True`` (background ignored,
    classes 0..58).

    Args:
        root: see above.
        split: ``"train"`` (4998 images) or ``"val"`` (5105).
        transform, reduce_zero_label, ignore_index: see :class:`SegmentationDataset`.

    Raises:
        DatasetLayoutError: release folder or split list missing, split empty, or an image
            lacks its label.
    """

    layout_description = (
        "ROOT[/VOCdevkit[/VOC2010]]/{JPEGImages/<id>.jpg, SegmentationClassContext/<id>.png, "
        "ImageSets/SegmentationContext/{train,val}.txt}"
    )

    def list_pairs(self) -> list[tuple[Path, Path]]:
        if self.split not in SPLITS:
            raise self.layout_error(self.root, f"unknown split {self.split!r}; use one of {SPLITS}")
        base = find_release_folder(self.root, RELEASE_CHAIN, "SegmentationClassContext")
        if base is None:
            raise self.layout_error(
                self.root, "no VOCdevkit/VOC2010/SegmentationClassContext under root"
            )
        list_file = base / "ImageSets" / "SegmentationContext" / f"{self.split}.txt"
        if not list_file.is_file():
            raise self.layout_error(list_file, f"split list for {self.split!r} not found")
        pairs = [
            (base / "JPEGImages" / f"{name}.jpg", base / "SegmentationClassContext" / f"{name}.png")
            for name in read_split_list(list_file)
        ]
        missing = [img for img, _ in pairs if not img.is_file()]
        if missing:
            raise self.layout_error(missing[0], f"image listed in {list_file.name} not found")
        return self.check_labels_exist(pairs)
