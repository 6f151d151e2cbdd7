"""The ``img_dir/<split>`` + ``ann_dir/<split>`` layout of mmsegmentation's converters.

LoveDA, ISPRS Potsdam and Vaihingen, and iSAID are stored this way once prepared (mmseg
``tools/dataset_converters/{loveda,potsdam,vaihingen,isaid}.py``; ``segctl data prepare``
writes the same). Each gets its own class, differing in file suffixes and documentation.
"""

from __future__ import annotations

from pathlib import Path

from trainer.data.base import SegmentationDataset, Transform


class ImgAnnDirDataset(SegmentationDataset):
    """One split stored as ``ROOT/img_dir/<split>/<name><image_suffix>`` with
    ``ROOT/ann_dir/<split>/<name><label_suffix>``.

    Subclasses set :attr:`image_suffix`, :attr:`label_suffix` and the default
    ``reduce_zero_label``.

    Raises:
        DatasetLayoutError: a split folder is missing, the split is empty, or an image lacks
            its label.
    """

    image_suffix = ".png"
    label_suffix = ".png"
    default_reduce_zero_label = False

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform: Transform | None = None,
        reduce_zero_label: bool | None = None,
        ignore_index: int = 255,
    ) -> None:
        if reduce_zero_label is None:
            reduce_zero_label = self.default_reduce_zero_label
        super().__init__(root, split, transform, reduce_zero_label, ignore_index)

    @classmethod
    def describe(cls) -> str:
        return (
            f"ROOT/img_dir/<split>/<name>{cls.image_suffix} with "
            f"ROOT/ann_dir/<split>/<name>{cls.label_suffix}"
        )

    def layout_error(self, path: Path, problem: str):
        self.layout_description = self.describe()
        return super().layout_error(path, problem)

    def list_pairs(self) -> list[tuple[Path, Path]]:
        image_dir = self.root / "img_dir" / self.split
        label_dir = self.root / "ann_dir" / self.split
        for path in (image_dir, label_dir):
            if not path.is_dir():
                raise self.layout_error(path, f"split folder for {self.split!r} does not exist")
        images = sorted(
            p for p in image_dir.glob("*" + self.image_suffix)
            if not (self.label_suffix != self.image_suffix and p.name.endswith(self.label_suffix))
        )
        if not images:
            raise self.layout_error(image_dir, f"no *{self.image_suffix} files")
        pairs = []
        for image in images:
            stem = image.name[: -len(self.image_suffix)]
            pairs.append((image, label_dir / (stem + self.label_suffix)))
        return self.check_labels_exist(pairs)


class LoveDADataset(ImgAnnDirDataset):
    """LoveDA (urban + rural tiles, 1024x1024): raw labels 0 = no-data, 1..7 classes.

    Layout: ``ROOT/img_dir/{train,val,test}/<n>.png`` with ``ROOT/ann_dir/{train,val}/<n>.png``
    (mmseg ``loveda.py`` converter). ``reduce_zero_label`` defaults to ``True`` (classes 0..6).
    """

    default_reduce_zero_label = True


class PotsdamDataset(ImgAnnDirDataset):
    """ISPRS Potsdam cut into 512x512 patches (stride 256): raw labels 0 = boundary/ignore,
    1..6 classes (impervious surface, building, low vegetation, tree, car, clutter).

    Layout: ``ROOT/img_dir/{train,val}/<i>_<j>_<x0>_<y0>_<x1>_<y1>.png`` with the same names
    under ``ann_dir`` (mmseg ``potsdam.py`` converter). ``reduce_zero_label`` defaults to
    ``True``.
    """

    default_reduce_zero_label = True


class VaihingenDataset(ImgAnnDirDataset):
    """ISPRS Vaihingen (IRRG images) cut into 512x512 patches, stride 256; labels as Potsdam.

    Layout: ``ROOT/img_dir/{train,val}/*.png`` with ``ROOT/ann_dir/{train,val}/*.png`` (mmseg
    ``vaihingen.py`` converter). ``reduce_zero_label`` defaults to ``True``.
    """

    default_reduce_zero_label = True


class ISAIDDataset(ImgAnnDirDataset):
    """iSAID cut into 896x896 patches (overlap 384): labels 0 = background, 1..15 classes,
    255 = padding.

    Layout: ``ROOT/img_dir/{train,val}/<P>_<y0>_<y1>_<x0>_<x1>.png`` with
    ``ROOT/ann_dir/{train,val}/<P>_<y0>_<y1>_<x0>_<x1>_instance_color_RGB.png`` (single-channel
    class ids despite the name, as mmseg ``isaid.py`` writes them).
    """

    label_suffix = "_instance_color_RGB.png"
