"""Cityscapes in its public layout, with the ``labelTrainIds`` files of cityscapesScripts.

Reference: mmsegmentation ``mmseg/datasets/cityscapes.py`` (image suffix ``_leftImg8bit.png``,
label suffix ``_gtFine_labelTrainIds.png``, 19 classes, 255 ignore, no zero-label reduction).
"""

from __future__ import annotations

from pathlib import Path

from trainer.data.base import SegmentationDataset

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelTrainIds.png"


class CityscapesDataset(SegmentationDataset):
    """One split of Cityscapes, fine annotations, trainIds 0..18 with 255 ignored.

    Layout::

        ROOT/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png
        ROOT/gtFine/<split>/<city>/<name>_gtFine_labelTrainIds.png

    The trainId files are produced from the released ``labelIds`` by cityscapesScripts'
    ``createTrainIdLabelImgs`` (or mmsegmentation's ``tools/dataset_converters/cityscapes.py``).

    Args:
        root: the folder holding ``leftImg8bit`` and ``gtFine``.
        split: ``"train"``, ``"val"`` or ``"test"``, or several joined by ``+``
            (``"train+val"``: the 3475 finely annotated frames, on which Cityscapes test-server
            entries are trained), listed split by split in the order given.
        transform, reduce_zero_label, ignore_index: see :class:`SegmentationDataset`.

    Raises:
        DatasetLayoutError: a folder is missing, the split has no images, or an image lacks its
            ``_gtFine_labelTrainIds.png``.
    """

    layout_description = (
        "ROOT/leftImg8bit/<split>/<city>/*" + IMAGE_SUFFIX
        + " with ROOT/gtFine/<split>/<city>/*" + LABEL_SUFFIX
    )

    def list_pairs(self) -> list[tuple[Path, Path]]:
        parts = self.split.split("+")
        if "" in parts or len(set(parts)) != len(parts):
            raise self.layout_error(
                self.root, f"split {self.split!r}: join distinct split names with '+'"
            )
        pairs = []
        for part in parts:
            pairs += self._split_pairs(part)
        return self.check_labels_exist(pairs)

    def _split_pairs(self, split: str) -> list[tuple[Path, Path]]:
        image_dir = self.root / "leftImg8bit" / split
        label_dir = self.root / "gtFine" / split
        for folder in (image_dir, label_dir):
            if not folder.is_dir():
                raise self.layout_error(folder, f"split folder for {split!r} does not exist")
        images = sorted(image_dir.glob("*/*" + IMAGE_SUFFIX))
        if not images:
            raise self.layout_error(image_dir, f"no *{IMAGE_SUFFIX} files in <city> subfolders")
        pairs = []
        for image in images:
            stem = image.name[: -len(IMAGE_SUFFIX)]
            pairs.append((image, label_dir / image.parent.name / (stem + LABEL_SUFFIX)))
        return pairs
