"""Parity of the 37 mmsegmentation FCN + HRNetV2 recipes with their source configs.

Every expected value below was read from open-mmlab/mmsegmentation at the release tag v1.2.2:
the leaf config ``configs/hrnet/fcn_hr{18,18s,48}_4xb{2,4}-*.py``, the ``fcn_hr18_*`` config a
``hr18s``/``hr48`` config inherits, and the ``_base_`` files they name
(``configs/_base_/models/fcn_hr18.py``, ``configs/_base_/datasets/<dataset>.py``,
``configs/_base_/schedules/schedule_<n>k.py``, ``configs/_base_/default_runtime.py``), merged
as mmengine merges them; the published numbers, models and logs from
``configs/hrnet/metafile.yaml`` of the same release. The files were read as the release ships
them in the PyPI sdist ``mmsegmentation-1.2.2.tar.gz`` (sha256
35dbd8089fd1c2baa467d3b7c2e1b197043f4f955ad5de8005170eee469102ec, configs under
``mmseg/.mim/configs/``): the git snapshot of the repository is larger than the fetch tool
takes, so :class:`Source` carries the tag ``v1.2.2`` where a commit would be. The metafile
also matches the copy indexed at commit 94ebf0a04d18f6c81ba7608c5470826f3653ac1a.

``open-mmlab://msra/hrnetv2_*`` names resolve through mmcv's ``open_mmlab.json``
(open-mmlab/mmcv@bfdd1f9c4281, master; mmengine 0.10.3 ``mmengine/hub/openmmlab.json``, which
mmseg 1.x reads, holds the same URLs).

The values are literal data, one table per kind of source file, so that a recipe that drifts
from its source fails here. The models are built on the meta device (no memory, no weights).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.parity.support import (
    RECIPES,
    Source,
    align_corners_values,
    dropout_probabilities,
    meta_model,
    recipes_matching,
    resolved,
)
from trainer.models.build import auxiliary_keys
from trainer.models.hrnet import HRModule, HRNetSpec

MMSEG = "open-mmlab/mmsegmentation"
MMSEG_RELEASE = "v1.2.2"


def mmseg(path: str) -> Source:
    """A file of the mmsegmentation v1.2.2 release."""
    return Source(MMSEG, MMSEG_RELEASE, path)


OPEN_MMLAB_JSON = Source(
    "open-mmlab/mmcv", "bfdd1f9c4281316f4f654672f0e9dbe1b0624ff0", "mmcv/model_zoo/open_mmlab.json"
)
#: OPEN_MMLAB_JSON: the files behind ``open-mmlab://`` names.
PRETRAINED_URLS = {
    "open-mmlab://msra/hrnetv2_w18_small":
        "https://download.openmmlab.com/pretrain/third_party/hrnetv2_w18_small-b5a04e21.pth",
    "open-mmlab://msra/hrnetv2_w18":
        "https://download.openmmlab.com/pretrain/third_party/hrnetv2_w18-00eb2006.pth",
    "open-mmlab://msra/hrnetv2_w48":
        "https://download.openmmlab.com/pretrain/third_party/hrnetv2_w48-d2186c55.pth",
}

# --- configs/_base_/models/fcn_hr18.py ------------------------------------------------------------

FCN_HR18 = mmseg("configs/_base_/models/fcn_hr18.py")
#: FCN_HR18's decode_head and test_cfg. dropout_ratio=-1: no Dropout module (mmseg builds one only
#: for a ratio > 0). No auxiliary_head. norm_cfg SyncBN (backbone and head), norm_eval False.
HEAD = {
    "dropout_ratio": -1,
    "align_corners": False,
    "kernel_size": 1,
    "num_convs": 1,
    "concat_input": False,
    "input_transform": "resize_concat",
    "in_index": (0, 1, 2, 3),
    "loss": "CrossEntropyLoss",
    "loss_weight": 1.0,
    "auxiliary_head": False,
    "norm": "SyncBN",
    "test_mode": "whole",
    "pad": (0, 255),  # data_preprocessor pad_val, seg_pad_val
}


@dataclass(frozen=True)
class Backbone:
    """``pretrained`` and the HRNet ``extra`` of a backbone variant."""

    source: str
    pretrained: str
    stage1_blocks: int
    num_modules: tuple[int, int, int]
    num_blocks: int
    widths: tuple[int, int, int, int]


#: hr18: FCN_HR18 itself; hr18s and hr48: the changes every configs/hrnet/fcn_hr18s_* and
#: fcn_hr48_* config makes to it (read in each of the 37 leaf configs below).
BACKBONES = {
    "hr18": Backbone(
        "configs/_base_/models/fcn_hr18.py", "open-mmlab://msra/hrnetv2_w18", 4, (1, 4, 3), 4,
        (18, 36, 72, 144),
    ),
    "hr18s": Backbone(
        "configs/hrnet/fcn_hr18s_*.py", "open-mmlab://msra/hrnetv2_w18_small", 2, (1, 3, 2), 2,
        (18, 36, 72, 144),
    ),
    "hr48": Backbone(
        "configs/hrnet/fcn_hr48_*.py", "open-mmlab://msra/hrnetv2_w48", 4, (1, 4, 3), 4,
        (48, 96, 192, 384),
    ),
}

# --- configs/_base_/datasets/*.py -----------------------------------------------------------------

MS_RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


@dataclass(frozen=True)
class Dataset:
    """A base dataset file: train pipeline, train/val data, test pipeline and TTA ratios.

    Every file's train pipeline is RandomResize(scale, ratio_range (0.5, 2.0), keep_ratio True)
    -> RandomCrop(crop_size, cat_max_ratio 0.75) -> RandomFlip(prob 0.5) ->
    PhotoMetricDistortion (pascal_voc12_aug.py adds a Pad to crop_size, which the data
    preprocessor does anyway); the test pipeline Resize(scale, keep_ratio True).
    """

    preset: str
    train_scale: tuple[int, int]
    test_scale: tuple[int, int]
    batch_size: int
    num_workers: int
    train_split: str
    val_split: str
    tta_ratios: tuple[float, ...] | None
    ratio_range: tuple[float, float] = (0.5, 2.0)
    keep_ratio: bool = True
    cat_max_ratio: float = 0.75


DATASETS = {
    # leftImg8bit/train, gtFine/train; val
    "cityscapes.py": Dataset("cityscapes", (2048, 1024), (2048, 1024), 2, 2, "train", "val", MS_RATIOS),
    # images/training, annotations/training; validation
    "ade20k.py": Dataset("ade20k", (2048, 512), (2048, 512), 4, 4, "train", "val", MS_RATIOS),
    # ConcatDataset(train.txt, aug.txt); val.txt (see the VOC departure below)
    "pascal_voc12_aug.py": Dataset("pascal_voc", (2048, 512), (2048, 512), 4, 4, "trainaug", "val", MS_RATIOS),
    # ImageSets/SegmentationContext/train.txt; val.txt. No tta_pipeline in this file.
    "pascal_context.py": Dataset("pascal_context", (520, 520), (520, 520), 4, 4, "train", "val", None),
    "pascal_context_59.py": Dataset("pascal_context_59", (520, 520), (520, 520), 4, 4, "train", "val", MS_RATIOS),
    # img_dir/train, ann_dir/train; val (and the same for potsdam, vaihingen, isaid)
    "loveda.py": Dataset("loveda", (2048, 512), (1024, 1024), 4, 4, "train", "val", MS_RATIOS),
    "potsdam.py": Dataset("potsdam", (512, 512), (512, 512), 4, 4, "train", "val", MS_RATIOS),
    "vaihingen.py": Dataset("vaihingen", (512, 512), (512, 512), 4, 4, "train", "val", MS_RATIOS),
    "isaid.py": Dataset("isaid", (896, 896), (896, 896), 4, 4, "train", "val", MS_RATIOS),
}

# --- configs/_base_/schedules/schedule_*.py -------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """optim_wrapper OptimWrapper (fp32, clip_grad None) with SGD; PolyLR(eta_min 1e-4, power
    0.9, begin 0, end max_iters, by_epoch False) and nothing else; IterBasedTrainLoop;
    CheckpointHook and LoggerHook intervals."""

    max_iters: int
    val_interval: int
    checkpoint_interval: int
    optimizer: tuple[float, float, float] = (0.01, 0.9, 0.0005)  # lr, momentum, weight_decay
    optim_wrapper: str = "OptimWrapper"
    clip_grad: None = None
    eta_min: float = 1e-4
    power: float = 0.9
    warmup_iters: int = 0
    log_interval: int = 50


SCHEDULES = {
    "schedule_20k.py": Schedule(20000, 2000, 2000),
    "schedule_40k.py": Schedule(40000, 4000, 4000),
    "schedule_80k.py": Schedule(80000, 8000, 8000),
    "schedule_160k.py": Schedule(160000, 16000, 16000),
}

# --- configs/_base_/default_runtime.py ------------------------------------------------------------

DEFAULT_RUNTIME = mmseg("configs/_base_/default_runtime.py")
#: DEFAULT_RUNTIME sets no ``randomness`` (mmengine draws a seed per run) and no TF32 flag
#: (env_cfg: cudnn_benchmark=True only); no EMA hook anywhere in the chain.
RUNTIME = {"seed": None, "tf32": None, "ema": None}

# --- configs/hrnet/*.py ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """One leaf config (``configs/hrnet/<name>.py``) and the recipe that reproduces it.

    ``parent``: the ``fcn_hr18_*`` config an hr18s/hr48 config inherits (it holds the _base_
    list, crop_size, num_classes and any test_cfg/optimizer override). ``gpus``: the 4 of
    ``4xb<n>``. ``optimizer``: the config's own SGD (lr, momentum, weight_decay), replacing the
    schedule's. ``slide``: test_cfg mode 'slide' (crop_size, stride).
    """

    name: str
    recipe: str
    backbone: str
    dataset: str
    schedule: str
    crop_size: tuple[int, int]
    num_classes: int
    gpus: int
    parent: str | None = None
    optimizer: tuple[float, float, float] | None = None
    slide: tuple[tuple[int, int], tuple[int, int]] | None = None

    @property
    def sources(self) -> list[Source]:
        """The files this config's values come from, leaf first."""
        paths = [f"configs/hrnet/{self.name}.py"]
        if self.parent:
            paths.append(f"configs/hrnet/{self.parent}.py")
        paths += [
            "configs/_base_/models/fcn_hr18.py",
            f"configs/_base_/datasets/{self.dataset}",
            "configs/_base_/default_runtime.py",
            f"configs/_base_/schedules/{self.schedule}",
        ]
        return [mmseg(p) for p in paths]


CONFIGS = [
    Config(
        "fcn_hr18s_4xb2-40k_cityscapes-512x1024", "cityscapes/fcn_hrnetv2_w18_small_512x1024_40k.yaml",
        "hr18s", "cityscapes.py", "schedule_40k.py", (512, 1024), 19, gpus=4,
        parent="fcn_hr18_4xb2-40k_cityscapes-512x1024",
    ),
    Config(
        "fcn_hr18_4xb2-40k_cityscapes-512x1024", "cityscapes/fcn_hrnetv2_w18_512x1024_40k.yaml",
        "hr18", "cityscapes.py", "schedule_40k.py", (512, 1024), 19, gpus=4,
    ),
    Config(
        "fcn_hr48_4xb2-40k_cityscapes-512x1024", "cityscapes/fcn_hrnetv2_w48_512x1024_40k.yaml",
        "hr48", "cityscapes.py", "schedule_40k.py", (512, 1024), 19, gpus=4,
        parent="fcn_hr18_4xb2-40k_cityscapes-512x1024",
    ),
    Config(
        "fcn_hr18s_4xb2-80k_cityscapes-512x1024", "cityscapes/fcn_hrnetv2_w18_small_512x1024_80k.yaml",
        "hr18s", "cityscapes.py", "schedule_80k.py", (512, 1024), 19, gpus=4,
        parent="fcn_hr18_4xb2-80k_cityscapes-512x1024",
    ),
    Config(
        "fcn_hr18_4xb2-80k_cityscapes-512x1024", "cityscapes/fcn_hrnetv2_w18_512x1024_80k.yaml",
        "hr18", "cityscapes.py", "schedule_80k.py", (512, 1024), 19, gpus=4,
    ),
    Config(
        "fcn_hr48_4xb2-80k_cityscapes-512x1024", "cityscapes/fcn_hrnetv2_w48_512x1024_80k.yaml",
        "hr48", "cityscapes.py", "schedule_80k.py", (512, 1024), 19, gpus=4,
        parent="fcn_hr18_4xb2-80k_cityscapes-512x1024",
    ),
    Config(
        "fcn_hr18s_4xb2-160k_cityscapes-512x1024", "cityscapes/fcn_hrnetv2_w18_small_512x1024_160k.yaml",
        "hr18s", "cityscapes.py", "schedule_160k.py", (512, 1024), 19, gpus=4,
        parent="fcn_hr18_4xb2-160k_cityscapes-512x1024",
    ),
    Config(
        "fcn_hr18_4xb2-160k_cityscapes-512x1024", "cityscapes/fcn_hrnetv2_w18_512x1024_160k.yaml",
        "hr18", "cityscapes.py", "schedule_160k.py", (512, 1024), 19, gpus=4,
    ),
    Config(
        "fcn_hr48_4xb2-160k_cityscapes-512x1024", "cityscapes/fcn_hrnetv2_w48_512x1024_160k.yaml",
        "hr48", "cityscapes.py", "schedule_160k.py", (512, 1024), 19, gpus=4,
        parent="fcn_hr18_4xb2-160k_cityscapes-512x1024",
    ),
    Config(
        "fcn_hr18s_4xb4-80k_ade20k-512x512", "ade20k/fcn_hrnetv2_w18_small_512x512_80k.yaml",
        "hr18s", "ade20k.py", "schedule_80k.py", (512, 512), 150, gpus=4,
        parent="fcn_hr18_4xb4-80k_ade20k-512x512",
    ),
    Config(
        "fcn_hr18_4xb4-80k_ade20k-512x512", "ade20k/fcn_hrnetv2_w18_512x512_80k.yaml",
        "hr18", "ade20k.py", "schedule_80k.py", (512, 512), 150, gpus=4,
    ),
    Config(
        "fcn_hr48_4xb4-80k_ade20k-512x512", "ade20k/fcn_hrnetv2_w48_512x512_80k.yaml",
        "hr48", "ade20k.py", "schedule_80k.py", (512, 512), 150, gpus=4,
        parent="fcn_hr18_4xb4-80k_ade20k-512x512",
    ),
    Config(
        "fcn_hr18s_4xb4-160k_ade20k-512x512", "ade20k/fcn_hrnetv2_w18_small_512x512_160k.yaml",
        "hr18s", "ade20k.py", "schedule_160k.py", (512, 512), 150, gpus=4,
        parent="fcn_hr18_4xb4-160k_ade20k-512x512",
    ),
    Config(
        "fcn_hr18_4xb4-160k_ade20k-512x512", "ade20k/fcn_hrnetv2_w18_512x512_160k.yaml",
        "hr18", "ade20k.py", "schedule_160k.py", (512, 512), 150, gpus=4,
    ),
    Config(
        "fcn_hr48_4xb4-160k_ade20k-512x512", "ade20k/fcn_hrnetv2_w48_512x512_160k.yaml",
        "hr48", "ade20k.py", "schedule_160k.py", (512, 512), 150, gpus=4,
        parent="fcn_hr18_4xb4-160k_ade20k-512x512",
    ),
    Config(
        "fcn_hr18s_4xb4-20k_voc12aug-512x512", "pascal_voc/fcn_hrnetv2_w18_small_512x512_20k.yaml",
        "hr18s", "pascal_voc12_aug.py", "schedule_20k.py", (512, 512), 21, gpus=4,
        parent="fcn_hr18_4xb4-20k_voc12aug-512x512",
    ),
    Config(
        "fcn_hr18_4xb4-20k_voc12aug-512x512", "pascal_voc/fcn_hrnetv2_w18_512x512_20k.yaml",
        "hr18", "pascal_voc12_aug.py", "schedule_20k.py", (512, 512), 21, gpus=4,
    ),
    Config(
        "fcn_hr48_4xb4-20k_voc12aug-512x512", "pascal_voc/fcn_hrnetv2_w48_512x512_20k.yaml",
        "hr48", "pascal_voc12_aug.py", "schedule_20k.py", (512, 512), 21, gpus=4,
        parent="fcn_hr18_4xb4-20k_voc12aug-512x512",
    ),
    Config(
        "fcn_hr18s_4xb4-40k_voc12aug-512x512", "pascal_voc/fcn_hrnetv2_w18_small_512x512_40k.yaml",
        "hr18s", "pascal_voc12_aug.py", "schedule_40k.py", (512, 512), 21, gpus=4,
        parent="fcn_hr18_4xb4-40k_voc12aug-512x512",
    ),
    Config(
        "fcn_hr18_4xb4-40k_voc12aug-512x512", "pascal_voc/fcn_hrnetv2_w18_512x512_40k.yaml",
        "hr18", "pascal_voc12_aug.py", "schedule_40k.py", (512, 512), 21, gpus=4,
    ),
    Config(
        "fcn_hr48_4xb4-40k_voc12aug-512x512", "pascal_voc/fcn_hrnetv2_w48_512x512_40k.yaml",
        "hr48", "pascal_voc12_aug.py", "schedule_40k.py", (512, 512), 21, gpus=4,
        parent="fcn_hr18_4xb4-40k_voc12aug-512x512",
    ),
    Config(
        "fcn_hr48_4xb4-40k_pascal-context-480x480", "pascal_context/fcn_hrnetv2_w48_480x480_40k.yaml",
        "hr48", "pascal_context.py", "schedule_40k.py", (480, 480), 60, gpus=4,
        parent="fcn_hr18_4xb4-40k_pascal-context-480x480",
        optimizer=(0.004, 0.9, 0.0001),
        slide=((480, 480), (320, 320)),
    ),
    Config(
        "fcn_hr48_4xb4-80k_pascal-context-480x480", "pascal_context/fcn_hrnetv2_w48_480x480_80k.yaml",
        "hr48", "pascal_context.py", "schedule_80k.py", (480, 480), 60, gpus=4,
        parent="fcn_hr18_4xb4-80k_pascal-context-480x480",
        optimizer=(0.004, 0.9, 0.0001),
        slide=((480, 480), (320, 320)),
    ),
    Config(
        "fcn_hr48_4xb4-40k_pascal-context-59-480x480", "pascal_context_59/fcn_hrnetv2_w48_480x480_40k.yaml",
        "hr48", "pascal_context_59.py", "schedule_40k.py", (480, 480), 59, gpus=4,
        parent="fcn_hr18_4xb4-40k_pascal-context-59-480x480",
        optimizer=(0.004, 0.9, 0.0001),
        slide=((480, 480), (320, 320)),
    ),
    Config(
        "fcn_hr48_4xb4-80k_pascal-context-59-480x480", "pascal_context_59/fcn_hrnetv2_w48_480x480_80k.yaml",
        "hr48", "pascal_context_59.py", "schedule_80k.py", (480, 480), 59, gpus=4,
        parent="fcn_hr18_4xb4-80k_pascal-context-59-480x480",
        optimizer=(0.004, 0.9, 0.0001),
        slide=((480, 480), (320, 320)),
    ),
    Config(
        "fcn_hr18s_4xb4-80k_loveda-512x512", "loveda/fcn_hrnetv2_w18_small_512x512_80k.yaml",
        "hr18s", "loveda.py", "schedule_80k.py", (512, 512), 7, gpus=4,
        parent="fcn_hr18_4xb4-80k_loveda-512x512",
    ),
    Config(
        "fcn_hr18_4xb4-80k_loveda-512x512", "loveda/fcn_hrnetv2_w18_512x512_80k.yaml",
        "hr18", "loveda.py", "schedule_80k.py", (512, 512), 7, gpus=4,
    ),
    Config(
        "fcn_hr48_4xb4-80k_loveda-512x512", "loveda/fcn_hrnetv2_w48_512x512_80k.yaml",
        "hr48", "loveda.py", "schedule_80k.py", (512, 512), 7, gpus=4,
        parent="fcn_hr18_4xb4-80k_loveda-512x512",
    ),
    Config(
        "fcn_hr18s_4xb4-80k_potsdam-512x512", "potsdam/fcn_hrnetv2_w18_small_512x512_80k.yaml",
        "hr18s", "potsdam.py", "schedule_80k.py", (512, 512), 6, gpus=4,
        parent="fcn_hr18_4xb4-80k_potsdam-512x512",
    ),
    Config(
        "fcn_hr18_4xb4-80k_potsdam-512x512", "potsdam/fcn_hrnetv2_w18_512x512_80k.yaml",
        "hr18", "potsdam.py", "schedule_80k.py", (512, 512), 6, gpus=4,
    ),
    Config(
        "fcn_hr48_4xb4-80k_potsdam-512x512", "potsdam/fcn_hrnetv2_w48_512x512_80k.yaml",
        "hr48", "potsdam.py", "schedule_80k.py", (512, 512), 6, gpus=4,
        parent="fcn_hr18_4xb4-80k_potsdam-512x512",
    ),
    Config(
        "fcn_hr18s_4xb4-80k_vaihingen-512x512", "vaihingen/fcn_hrnetv2_w18_small_512x512_80k.yaml",
        "hr18s", "vaihingen.py", "schedule_80k.py", (512, 512), 6, gpus=4,
        parent="fcn_hr18_4xb4-80k_vaihingen-512x512",
    ),
    Config(
        "fcn_hr18_4xb4-80k_vaihingen-512x512", "vaihingen/fcn_hrnetv2_w18_512x512_80k.yaml",
        "hr18", "vaihingen.py", "schedule_80k.py", (512, 512), 6, gpus=4,
    ),
    Config(
        "fcn_hr48_4xb4-80k_vaihingen-512x512", "vaihingen/fcn_hrnetv2_w48_512x512_80k.yaml",
        "hr48", "vaihingen.py", "schedule_80k.py", (512, 512), 6, gpus=4,
        parent="fcn_hr18_4xb4-80k_vaihingen-512x512",
    ),
    Config(
        "fcn_hr18s_4xb4-80k_isaid-896x896", "isaid/fcn_hrnetv2_w18_small_896x896_80k.yaml",
        "hr18s", "isaid.py", "schedule_80k.py", (896, 896), 16, gpus=4,
        parent="fcn_hr18_4xb4-80k_isaid-896x896",
    ),
    Config(
        "fcn_hr18_4xb4-80k_isaid-896x896", "isaid/fcn_hrnetv2_w18_896x896_80k.yaml",
        "hr18", "isaid.py", "schedule_80k.py", (896, 896), 16, gpus=4,
    ),
    Config(
        "fcn_hr48_4xb4-80k_isaid-896x896", "isaid/fcn_hrnetv2_w48_896x896_80k.yaml",
        "hr48", "isaid.py", "schedule_80k.py", (896, 896), 16, gpus=4,
        parent="fcn_hr18_4xb4-80k_isaid-896x896",
    ),
]

#: mmseg("configs/hrnet/metafile.yaml"): Name -> mIoU, mIoU(ms+flip), Weights, Training log.
METAFILE = mmseg("configs/hrnet/metafile.yaml")
PUBLISHED = {
    "fcn_hr18s_4xb2-40k_cityscapes-512x1024": (
        73.86, 75.91,
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18s_512x1024_40k_cityscapes/fcn_hr18s_512x1024_40k_cityscapes_20200601_014216-93db27d0.pth",
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18s_512x1024_40k_cityscapes/fcn_hr18s_512x1024_40k_cityscapes_20200601_014216.log.json",
    ),
    "fcn_hr18_4xb2-40k_cityscapes-512x1024": (
        77.19, 78.92,
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18_512x1024_40k_cityscapes/fcn_hr18_512x1024_40k_cityscapes_20200601_014216-f196fb4e.pth",
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18_512x1024_40k_cityscapes/fcn_hr18_512x1024_40k_cityscapes_20200601_014216.log.json",
    ),
    "fcn_hr48_4xb2-40k_cityscapes-512x1024": (
        78.48, 79.69,
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr48_512x1024_40k_cityscapes/fcn_hr48_512x1024_40k_cityscapes_20200601_014240-a989b146.pth",
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr48_512x1024_40k_cityscapes/fcn_hr48_512x1024_40k_cityscapes_20200601_014240.log.json",
    ),
    "fcn_hr18s_4xb2-80k_cityscapes-512x1024": (
        75.31, 77.48,
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18s_512x1024_80k_cityscapes/fcn_hr18s_512x1024_80k_cityscapes_20200601_202700-1462b75d.pth",
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18s_512x1024_80k_cityscapes/fcn_hr18s_512x1024_80k_cityscapes_20200601_202700.log.json",
    ),
    "fcn_hr18_4xb2-80k_cityscapes-512x1024": (
        78.65, 80.35,
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18_512x1024_80k_cityscapes/fcn_hr18_512x1024_80k_cityscapes_20200601_223255-4e7b345e.pth",
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18_512x1024_80k_cityscapes/fcn_hr18_512x1024_80k_cityscapes_20200601_223255.log.json",
    ),
    "fcn_hr48_4xb2-80k_cityscapes-512x1024": (
        79.93, 80.72,
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr48_512x1024_80k_cityscapes/fcn_hr48_512x1024_80k_cityscapes_20200601_202606-58ea95d6.pth",
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr48_512x1024_80k_cityscapes/fcn_hr48_512x1024_80k_cityscapes_20200601_202606.log.json",
    ),
    "fcn_hr18s_4xb2-160k_cityscapes-512x1024": (
        76.31, 78.31,
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18s_512x1024_160k_cityscapes/fcn_hr18s_512x1024_160k_cityscapes_20200602_190901-4a0797ea.pth",
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18s_512x1024_160k_cityscapes/fcn_hr18s_512x1024_160k_cityscapes_20200602_190901.log.json",
    ),
    "fcn_hr18_4xb2-160k_cityscapes-512x1024": (
        78.8, 80.74,
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18_512x1024_160k_cityscapes/fcn_hr18_512x1024_160k_cityscapes_20200602_190822-221e4a4f.pth",
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18_512x1024_160k_cityscapes/fcn_hr18_512x1024_160k_cityscapes_20200602_190822.log.json",
    ),
    "fcn_hr48_4xb2-160k_cityscapes-512x1024": (
        80.65, 81.92,
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr48_512x1024_160k_cityscapes/fcn_hr48_512x1024_160k_cityscapes_20200602_190946-59b7973e.pth",
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr48_512x1024_160k_cityscapes/fcn_hr48_512x1024_160k_cityscapes_20200602_190946.log.json",
    ),
    "fcn_hr18s_4xb4-80k_ade20k-512x512": (
        31.38, 32.45,
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18s_512x512_80k_ade20k/fcn_hr18s_512x512_80k_ade20k_20200614_144345-77fc814a.pth",
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18s_512x512_80k_ade20k/fcn_hr18s_512x512_80k_ade20k_20200614_144345.log.json",
    ),
    "fcn_hr18_4xb4-80k_ade20k-512x512": (
        36.27, 37.28,
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18_512x512_80k_ade20k/fcn_hr18_512x512_80k_ade20k_20210827_114910-6c9382c0.pth",
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18_512x512_80k_ade20k/fcn_hr18_512x512_80k_ade20k_20210827_114910.log.json",
    ),
    "fcn_hr48_4xb4-80k_ade20k-512x512": (
        41.9, 43.27,
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr48_512x512_80k_ade20k/fcn_hr48_512x512_80k_ade20k_20200614_193946-7ba5258d.pth",
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr48_512x512_80k_ade20k/fcn_hr48_512x512_80k_ade20k_20200614_193946.log.json",
    ),
    "fcn_hr18s_4xb4-160k_ade20k-512x512": (
        33.07, 34.56,
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18s_512x512_160k_ade20k/fcn_hr18s_512x512_160k_ade20k_20210829_174739-f1e7c2e7.pth",
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18s_512x512_160k_ade20k/fcn_hr18s_512x512_160k_ade20k_20210829_174739.log.json",
    ),
    "fcn_hr18_4xb4-160k_ade20k-512x512": (
        36.79, 38.58,
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18_512x512_160k_ade20k/fcn_hr18_512x512_160k_ade20k_20200614_214426-ca961836.pth",
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18_512x512_160k_ade20k/fcn_hr18_512x512_160k_ade20k_20200614_214426.log.json",
    ),
    "fcn_hr48_4xb4-160k_ade20k-512x512": (
        42.02, 43.86,
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr48_512x512_160k_ade20k/fcn_hr48_512x512_160k_ade20k_20200614_214407-a52fc02c.pth",
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr48_512x512_160k_ade20k/fcn_hr48_512x512_160k_ade20k_20200614_214407.log.json",
    ),
    "fcn_hr18s_4xb4-20k_voc12aug-512x512": (
        65.5, 68.89,
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18s_512x512_20k_voc12aug/fcn_hr18s_512x512_20k_voc12aug_20210829_174910-0aceadb4.pth",
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18s_512x512_20k_voc12aug/fcn_hr18s_512x512_20k_voc12aug_20210829_174910.log.json",
    ),
    "fcn_hr18_4xb4-20k_voc12aug-512x512": (
        72.3, 74.71,
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18_512x512_20k_voc12aug/fcn_hr18_512x512_20k_voc12aug_20200617_224503-488d45f7.pth",
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18_512x512_20k_voc12aug/fcn_hr18_512x512_20k_voc12aug_20200617_224503.log.json",
    ),
    "fcn_hr48_4xb4-20k_voc12aug-512x512": (
        75.87, 78.58,
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr48_512x512_20k_voc12aug/fcn_hr48_512x512_20k_voc12aug_20200617_224419-89de05cd.pth",
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr48_512x512_20k_voc12aug/fcn_hr48_512x512_20k_voc12aug_20200617_224419.log.json",
    ),
    "fcn_hr18s_4xb4-40k_voc12aug-512x512": (
        66.61, 70.0,
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18s_512x512_40k_voc12aug/fcn_hr18s_512x512_40k_voc12aug_20200614_000648-4f8d6e7f.pth",
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18s_512x512_40k_voc12aug/fcn_hr18s_512x512_40k_voc12aug_20200614_000648.log.json",
    ),
    "fcn_hr18_4xb4-40k_voc12aug-512x512": (
        72.9, 75.59,
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18_512x512_40k_voc12aug/fcn_hr18_512x512_40k_voc12aug_20200613_224401-1b4b76cd.pth",
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18_512x512_40k_voc12aug/fcn_hr18_512x512_40k_voc12aug_20200613_224401.log.json",
    ),
    "fcn_hr48_4xb4-40k_voc12aug-512x512": (
        76.24, 78.49,
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr48_512x512_40k_voc12aug/fcn_hr48_512x512_40k_voc12aug_20200613_222111-1b0f18bc.pth",
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr48_512x512_40k_voc12aug/fcn_hr48_512x512_40k_voc12aug_20200613_222111.log.json",
    ),
    "fcn_hr48_4xb4-40k_pascal-context-480x480": (
        45.14, 47.42,
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr48_480x480_40k_pascal_context/fcn_hr48_480x480_40k_pascal_context_20200911_164852-667d00b0.pth",
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr48_480x480_40k_pascal_context/fcn_hr48_480x480_40k_pascal_context-20200911_164852.log.json",
    ),
    "fcn_hr48_4xb4-80k_pascal-context-480x480": (
        45.84, 47.84,
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr48_480x480_80k_pascal_context/fcn_hr48_480x480_80k_pascal_context_20200911_155322-847a6711.pth",
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr48_480x480_80k_pascal_context/fcn_hr48_480x480_80k_pascal_context-20200911_155322.log.json",
    ),
    "fcn_hr48_4xb4-40k_pascal-context-59-480x480": (
        50.33, 52.83,
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr48_480x480_40k_pascal_context_59/fcn_hr48_480x480_40k_pascal_context_59_20210410_122738-b808b8b2.pth",
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr48_480x480_40k_pascal_context_59/fcn_hr48_480x480_40k_pascal_context_59-20210410_122738.log.json",
    ),
    "fcn_hr48_4xb4-80k_pascal-context-59-480x480": (
        51.12, 53.56,
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr48_480x480_80k_pascal_context_59/fcn_hr48_480x480_80k_pascal_context_59_20210411_003240-3ae7081e.pth",
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr48_480x480_80k_pascal_context_59/fcn_hr48_480x480_80k_pascal_context_59-20210411_003240.log.json",
    ),
    "fcn_hr18s_4xb4-80k_loveda-512x512": (
        49.28, 49.42,
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18s_512x512_80k_loveda/fcn_hr18s_512x512_80k_loveda_20211210_203228-60a86a7a.pth",
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18s_512x512_80k_loveda/fcn_hr18s_512x512_80k_loveda_20211210_203228.log.json",
    ),
    "fcn_hr18_4xb4-80k_loveda-512x512": (
        50.81, 50.95,
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18_512x512_80k_loveda/fcn_hr18_512x512_80k_loveda_20211210_203952-93d9c3b3.pth",
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18_512x512_80k_loveda/fcn_hr18_512x512_80k_loveda_20211210_203952.log.json",
    ),
    "fcn_hr48_4xb4-80k_loveda-512x512": (
        51.42, 51.64,
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr48_512x512_80k_loveda/fcn_hr48_512x512_80k_loveda_20211211_044756-67072f55.pth",
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr48_512x512_80k_loveda/fcn_hr48_512x512_80k_loveda_20211211_044756.log.json",
    ),
    "fcn_hr18s_4xb4-80k_potsdam-512x512": (
        77.64, 78.8,
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18s_512x512_80k_potsdam/fcn_hr18s_512x512_80k_potsdam_20211218_205517-ba32af63.pth",
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18s_512x512_80k_potsdam/fcn_hr18s_512x512_80k_potsdam_20211218_205517.log.json",
    ),
    "fcn_hr18_4xb4-80k_potsdam-512x512": (
        78.26, 79.24,
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18_512x512_80k_potsdam/fcn_hr18_512x512_80k_potsdam_20211218_205517-5d0387ad.pth",
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18_512x512_80k_potsdam/fcn_hr18_512x512_80k_potsdam_20211218_205517.log.json",
    ),
    "fcn_hr48_4xb4-80k_potsdam-512x512": (
        78.39, 79.34,
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr48_512x512_80k_potsdam/fcn_hr48_512x512_80k_potsdam_20211219_020601-97434c78.pth",
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr48_512x512_80k_potsdam/fcn_hr48_512x512_80k_potsdam_20211219_020601.log.json",
    ),
    "fcn_hr18s_4xb4-80k_vaihingen-512x512": (
        71.81, 73.1,
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18s_4x4_512x512_80k_vaihingen/fcn_hr18s_4x4_512x512_80k_vaihingen_20211231_230909-b23aae02.pth",
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18s_4x4_512x512_80k_vaihingen/fcn_hr18s_4x4_512x512_80k_vaihingen_20211231_230909.log.json",
    ),
    "fcn_hr18_4xb4-80k_vaihingen-512x512": (
        72.57, 74.09,
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18_4x4_512x512_80k_vaihingen/fcn_hr18_4x4_512x512_80k_vaihingen_20211231_231216-2ec3ae8a.pth",
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18_4x4_512x512_80k_vaihingen/fcn_hr18_4x4_512x512_80k_vaihingen_20211231_231216.log.json",
    ),
    "fcn_hr48_4xb4-80k_vaihingen-512x512": (
        72.5, 73.52,
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr48_4x4_512x512_80k_vaihingen/fcn_hr48_4x4_512x512_80k_vaihingen_20211231_231244-7133cb22.pth",
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr48_4x4_512x512_80k_vaihingen/fcn_hr48_4x4_512x512_80k_vaihingen_20211231_231244.log.json",
    ),
    "fcn_hr18s_4xb4-80k_isaid-896x896": (
        62.3, 62.97,
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18s_4x4_896x896_80k_isaid/fcn_hr18s_4x4_896x896_80k_isaid_20220118_001603-3cc0769b.pth",
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18s_4x4_896x896_80k_isaid/fcn_hr18s_4x4_896x896_80k_isaid_20220118_001603.log.json",
    ),
    "fcn_hr18_4xb4-80k_isaid-896x896": (
        65.06, 65.6,
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18_4x4_896x896_80k_isaid/fcn_hr18_4x4_896x896_80k_isaid_20220110_182230-49bf752e.pth",
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18_4x4_896x896_80k_isaid/fcn_hr18_4x4_896x896_80k_isaid_20220110_182230.log.json",
    ),
    "fcn_hr48_4xb4-80k_isaid-896x896": (
        67.8, 68.53,
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr48_4x4_896x896_80k_isaid/fcn_hr48_4x4_896x896_80k_isaid_20220114_174643-547fc420.pth",
        "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr48_4x4_896x896_80k_isaid/fcn_hr48_4x4_896x896_80k_isaid_20220114_174643.log.json",
    ),
}

def departures(config: Config) -> set[str]:
    """The source files a recipe cannot follow; each recipe says so in a comment beginning
    ``departs from <file>:``. default_runtime.py sets no seed (mmengine draws one per run), and
    segctl fixes one; pascal_voc12_aug.py's ConcatDataset(train.txt, aug.txt) draws the 1,464 VOC
    train images twice as often as the rest, and segctl's trainaug split lists each image once."""
    files = {"default_runtime.py"}
    if config.dataset == "pascal_voc12_aug.py":
        files.add("pascal_voc12_aug.py")
    return files


BY_RECIPE = {c.recipe: c for c in CONFIGS}


def family() -> list[str]:
    """This family's recipes: mmseg's iteration schedules (the United-Perception FCN recipes of
    the same models end in ``180e``/``180e_ema``)."""
    return recipes_matching("*/fcn_hrnetv2_*k.yaml")


def test_the_table_covers_every_recipe_of_the_family() -> None:
    assert len(CONFIGS) == 37
    assert sorted(BY_RECIPE) == family()
    assert set(PUBLISHED) == {c.name for c in CONFIGS}


@pytest.fixture(params=CONFIGS, ids=lambda c: c.recipe)
def config(request) -> Config:
    return request.param


def test_data(config: Config) -> None:
    data = resolved(config.recipe).data
    ds = DATASETS[config.dataset]
    where = f"{config.recipe} vs {config.sources[0]} and {mmseg('configs/_base_/datasets/' + config.dataset)}"
    assert data.dataset == ds.preset, where
    assert tuple(data.crop_size) == config.crop_size, where
    assert tuple(data.train_scale) == ds.train_scale, where
    assert tuple(data.ratio_range) == ds.ratio_range, where
    assert data.keep_ratio is ds.keep_ratio, where
    assert data.cat_max_ratio == ds.cat_max_ratio, where
    assert (data.train_split, data.val_split) == (ds.train_split, ds.val_split), where
    assert data.num_workers == ds.num_workers, where
    # SegDataPreProcessor pads the crop after it, with HEAD["pad"]; the flip is mmseg's.
    assert data.pad_position == "bottom_right", where
    assert (data.flip_swap_pairs, data.random_rotation) == ([], None), where


def test_model(config: Config) -> None:
    model = resolved(config.recipe).model
    backbone = BACKBONES[config.backbone]
    where = f"{config.recipe} vs {config.sources[0]}, {FCN_HR18} and {OPEN_MMLAB_JSON}"
    assert model.name == {"hr18": "fcn_hrnetv2_w18", "hr18s": "fcn_hrnetv2_w18_small",
                          "hr48": "fcn_hrnetv2_w48"}[config.backbone], where
    assert model.init_checkpoint == PRETRAINED_URLS[backbone.pretrained], where
    # Nothing that would move the head or backbone away from fcn_hr18.py.
    assert (model.drop_path_rate, model.aux_loss_weight, model.options) == (None, None, {}), where


def test_optimizer(config: Config) -> None:
    optim = resolved(config.recipe).optim
    schedule = SCHEDULES[config.schedule]
    lr, momentum, weight_decay = config.optimizer or schedule.optimizer
    where = f"{config.recipe} vs {config.sources[1 if config.parent else 0]} / {config.schedule}"
    assert optim.type == "sgd", where
    assert (optim.lr, optim.momentum, optim.weight_decay) == (lr, momentum, weight_decay), where
    # No paramwise_cfg: one group at the base rate, weight decay on every parameter.
    assert (optim.head_lr_mult, optim.backbone_lr_mult, optim.no_decay_norm_and_pos) == (
        1.0, 1.0, False), where
    assert optim.grad_clip is schedule.clip_grad, where
    assert optim.layer_decay_rate is None, where


def test_schedule(config: Config) -> None:
    sched = resolved(config.recipe).schedule
    expected = SCHEDULES[config.schedule]
    where = f"{config.recipe} vs {mmseg('configs/_base_/schedules/' + config.schedule)}"
    assert (sched.max_iters, sched.max_epochs) == (expected.max_iters, None), where
    assert (sched.warmup_iters, sched.poly_power, sched.min_lr) == (
        expected.warmup_iters, expected.power, expected.eta_min), where
    assert sched.min_lr_follows_lr_mult is False, where  # one group: no multiplier to follow
    assert (sched.val_interval, sched.checkpoint_interval, sched.log_interval) == (
        expected.val_interval, expected.checkpoint_interval, expected.log_interval), where


def test_train_and_cluster(config: Config) -> None:
    recipe = resolved(config.recipe)
    train, cluster = recipe.train, recipe.cluster
    ds = DATASETS[config.dataset]
    where = f"{config.recipe} vs {config.sources[0]}, {FCN_HR18}, {DEFAULT_RUNTIME}"
    assert train.batch_size == ds.batch_size, where
    assert cluster.nodes * cluster.gpus_per_node == config.gpus, where
    # OptimWrapper (no AmpOptimWrapper): fp32; TF32 left at PyTorch's defaults.
    assert (train.precision, train.tf32) == ("fp32", RUNTIME["tf32"]), where
    assert (train.ema_decay, train.ema_ramp_iters) == (RUNTIME["ema"], None), where
    assert train.sync_bn is (HEAD["norm"] == "SyncBN"), where
    assert (train.loss, HEAD["loss"], HEAD["loss_weight"]) == ("ce", "CrossEntropyLoss", 1.0), where
    # The source sets no seed (departure, documented in the recipe): segctl's is fixed.
    assert RUNTIME["seed"] is None and train.seed == 0, where


def test_eval(config: Config) -> None:
    ev = resolved(config.recipe).eval
    ds = DATASETS[config.dataset]
    where = f"{config.recipe} vs {config.sources[0]} and its _base_ files"
    if config.slide is None:
        assert (ev.mode, ev.crop_size, ev.stride) == (HEAD["test_mode"], None, None), where
    else:
        crop, stride = config.slide
        assert (ev.mode, ev.crop_size, ev.stride) == ("slide", crop, stride), where
    assert tuple(ev.test_scale) == ds.test_scale, where
    assert ev.keep_ratio is True, where
    # ms+flip: tta_pipeline img_ratios x (no flip, flip), softmax scores averaged (SegTTAModel).
    # pascal_context.py has none; its recipes use the ratios of every other base file.
    assert tuple(ev.scales) == (ds.tta_ratios or MS_RATIOS), where
    assert (ev.average, ev.size_divisor, ev.ms_flip) == ("probs", None, False), where


def test_reference(config: Config) -> None:
    ref = resolved(config.recipe).reference
    miou, miou_ms_flip, weights, log = PUBLISHED[config.name]
    where = f"{config.recipe} vs {METAFILE} ({config.name})"
    assert ref is not None, where
    assert (ref.miou_ss, ref.miou_ms_flip) == (miou, miou_ms_flip), where
    assert (ref.checkpoint, ref.log, ref.split) == (weights, log, "val"), where
    assert f"configs/hrnet/{config.name}.py" in ref.source, where


def test_recipe_cites_its_sources_and_departures(config: Config) -> None:
    text = (RECIPES / config.recipe).read_text()
    assert f"{MMSEG}@{MMSEG_RELEASE}" in text, config.recipe
    for source in config.sources:
        assert source.path in text or source.path.split("/")[-1] in text, (config.recipe, str(source))
    assert f"{OPEN_MMLAB_JSON.repository}@{OPEN_MMLAB_JSON.commit}:{OPEN_MMLAB_JSON.path}" in text
    assert set(re.findall(r"departs from (\S+):", text)) == departures(config), config.recipe


def test_model_built_on_meta_device(config: Config) -> None:
    model = meta_model(config.recipe)
    backbone = BACKBONES[config.backbone]
    where = f"{config.recipe} vs {FCN_HR18} and {config.sources[0]}"
    # dropout_ratio=-1: no dropout anywhere; align_corners False in the head and segmentor.
    assert HEAD["dropout_ratio"] <= 0 and dropout_probabilities(model) == {}, where
    assert set(align_corners_values(model).values()) == {HEAD["align_corners"]}, where
    assert not auxiliary_keys(model) and not HEAD["auxiliary_head"], where
    # The HRNet of the config's `extra`, mmseg's stem (ReLU after bn1) and fusion upsampling.
    assert model.backbone.spec == HRNetSpec(
        backbone.stage1_blocks, 64, backbone.num_modules, backbone.num_blocks, backbone.widths
    ), where
    assert model.backbone.stem_relu is True, where
    assert all(not m.fuse_align_corners for m in model.modules() if isinstance(m, HRModule)), where
    # FCNHead: resize_concat of all four branches, one 1x1 ConvModule of sum(widths) channels.
    head = model.decode_head
    width = sum(backbone.widths)
    assert (head.input_transform, head.in_index) == (HEAD["input_transform"], HEAD["in_index"]), where
    assert (head.in_channels, head.channels) == (width, width), where
    assert len(head.convs) == HEAD["num_convs"], where
    assert head.convs[0].conv.kernel_size == (HEAD["kernel_size"],) * 2, where
    assert (head.conv_cat is None) == (not HEAD["concat_input"]), where
    assert head.conv_seg.out_channels == config.num_classes, where


def test_parity_table_reads_like_its_sources() -> None:
    """Guards on the tables themselves: names, crops and schedules agree with the file names."""
    for c in CONFIGS:
        h, w = c.crop_size
        assert c.name.endswith(f"-{h}x{w}"), c.name
        assert f"-{SCHEDULES[c.schedule].max_iters // 1000}k_" in c.name, c.name
        assert c.name.startswith(f"fcn_{c.backbone}_{c.gpus}xb{DATASETS[c.dataset].batch_size}-"), c.name
        assert (c.parent is None) == (c.backbone == "hr18"), c.name
        assert Path(c.recipe).parent.name == DATASETS[c.dataset].preset, c.name
