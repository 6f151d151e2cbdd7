"""LIP (Look Into Person) single-person human parsing, 20 classes with background 0.

Reference: mmsegmentation ``mmseg/datasets/lip.py`` and ``configs/_base_/datasets/
lip_473x473.py``. Some images are greyscale JPEGs; :func:`trainer.data.io.read_image` turns
them into three channels.
"""

from __future__ import annotations

from pathlib import Path

from trainer.data.base import SegmentationDataset

SPLITS = ("train", "val")


class LIPDataset(SegmentationDataset):
    """One split of LIP (30462 train, 10000 val images); labels 0..19.

    Layout (either form)::

        ROOT/LIP/{train,val}_images/<id>.jpg   with ROOT/LIP/{train,val}_segmentations/<id>.png
        ROOT/TrainVal_images/{train,val}_images/<id>.jpg
            with ROOT/TrainVal_parsing_annotations/{train,val}_segmentations/<id>.png

    ``ROOT`` may also be the ``LIP`` folder itself.

    Args:
        root: see above.
        split: ``"train"`` or ``"val"``.
        transform, reduce_zero_label, ignore_index: see :class:`SegmentationDataset`.

    Raises:
        DatasetLayoutError: folders missing, the split empty, or an image lacks its label.
    """

    layout_description = (
        "ROOT[/LIP]/{train,val}_images/*.jpg with ROOT[/LIP]/{train,val}_segmentations/*.png "
        "(or TrainVal_images/... with TrainVal_parsing_annotations/...)"
    )

    def split_folders(self) -> tuple[Path, Path]:
        """The (image folder, label folder) of the split, in whichever accepted form exists."""
        images, labels = f"{self.split}_images", f"{self.split}_segmentations"
        for base in (self.root / "LIP", self.root):
            if (base / images).is_dir():
                return base / images, base / labels
            nested = base / "TrainVal_images" / images
            if nested.is_dir():
                return nested, base / "TrainVal_parsing_annotations" / labels
        raise self.layout_error(self.root, f"no {images}/ folder found under root")

    def list_pairs(self) -> list[tuple[Path, Path]]:
        if self.split not in SPLITS:
            raise self.layout_error(self.root, f"unknown split {self.split!r}; use one of {SPLITS}")
        image_dir, label_dir = self.split_folders()
        if not label_dir.is_dir():
            raise self.layout_error(label_dir, f"label folder for {self.split!r} does not exist")
        images = sorted(image_dir.glob("*.jpg"))
        if not images:
            raise self.layout_error(image_dir, "no *.jpg files")
        return self.check_labels_exist([(img, label_dir / (img.stem + ".png")) for img in images])
