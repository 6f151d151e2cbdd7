"""ADE20K as released for the MIT Scene Parsing benchmark (``ADEChallengeData2016``).

Reference: mmsegmentation ``mmseg/datasets/ade.py`` (``.jpg`` images, ``.png`` annotations,
150 classes, ``reduce_zero_label=True``: 0 "other" is ignored and classes shift to 0..149).
"""

from __future__ import annotations

from pathlib import Path

from trainer.data.base import SegmentationDataset, Transform

RELEASE_FOLDER = "ADEChallengeData2016"
SPLIT_FOLDERS = {"train": "training", "val": "validation", "training": "training",
                 "validation": "validation"}


class ADE20KDataset(SegmentationDataset):
    """One split of ADE20K (SceneParsing 150 classes).

    Layout::

        ROOT/ADEChallengeData2016/images/{training,validation}/<name>.jpg
        ROOT/ADEChallengeData2016/annotations/{training,validation}/<name>.png

    ``ROOT`` may also be the ``ADEChallengeData2016`` folder itself.

    Args:
        root: the folder containing ``ADEChallengeData2016``, or that folder.
        split: ``"train"``/``"val"`` (or the release's ``"training"``/``"validation"``).
        transform, ignore_index: see :class:`SegmentationDataset`.
        reduce_zero_label: default ``True`` as in the standard setup: raw 0 becomes
            ``ignore_index``, raw ``k`` (1..150) becomes ``k - 1`` (0..149).

    Raises:
        DatasetLayoutError: unknown split name, a folder is missing, the split has no images,
            or an image lacks its annotation.
    """

    layout_description = (
        "ROOT[/ADEChallengeData2016]/images/{training,validation}/*.jpg with "
        "ROOT[/ADEChallengeData2016]/annotations/{training,validation}/*.png"
    )

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform: Transform | None = None,
        reduce_zero_label: bool = True,
        ignore_index: int = 255,
    ) -> None:
        super().__init__(root, split, transform, reduce_zero_label, ignore_index)

    def release_folder(self) -> Path:
        """The ``ADEChallengeData2016`` folder, whichever of the two accepted roots was given."""
        nested = self.root / RELEASE_FOLDER
        if nested.is_dir():
            return nested
        if (self.root / "images").is_dir() and (self.root / "annotations").is_dir():
            return self.root
        raise self.layout_error(
            self.root, f"neither {RELEASE_FOLDER}/ nor images/ and annotations/ found under root"
        )

    def list_pairs(self) -> list[tuple[Path, Path]]:
        if self.split not in SPLIT_FOLDERS:
            raise self.layout_error(
                self.root, f"unknown split {self.split!r}; use one of {sorted(SPLIT_FOLDERS)}"
            )
        folder = SPLIT_FOLDERS[self.split]
        base = self.release_folder()
        image_dir = base / "images" / folder
        label_dir = base / "annotations" / folder
        for path in (image_dir, label_dir):
            if not path.is_dir():
                raise self.layout_error(path, f"split folder for {self.split!r} does not exist")
        images = sorted(image_dir.glob("*.jpg"))
        if not images:
            raise self.layout_error(image_dir, "no *.jpg files")
        return self.check_labels_exist([(img, label_dir / (img.stem + ".png")) for img in images])
