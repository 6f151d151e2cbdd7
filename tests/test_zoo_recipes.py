"""The model-zoo recipes against the published tables they reproduce.

``tests/data/zoo_targets.csv`` is the list of published results (73 rows from four tables: the
United-Perception seg benchmark, InternImage's ADE20K table, mmsegmentation's HRNet results and
sssegmentation's MCIBI results). Each row maps to exactly one recipe under ``recipes/`` through
the explicit :data:`ROW_TO_RECIPE` table, and each recipe carries that row's dataset, model,
crop, schedule, global batch and reference numbers. Parameter counts shown by
``segctl recipes list --json`` are checked against the published architecture facts.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from segctl.cli import app
from segctl.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
TARGETS = Path(__file__).parent / "data" / "zoo_targets.csv"
#: Recipes that reproduce no published row: the CPU smoke test and the short alias.
NOT_ZOO = {"quickstart.yaml", "internimage_h_ade20k.yaml"}

#: (table, dataset, method, backbone, crop_size, schedule, ema) of a targets row -> recipe under recipes/.
ROW_TO_RECIPE: dict[tuple[str, str, str, str, str, str, str], str] = {
    ('seg_benchmark_up', 'cityscapes', 'SegFormer', 'MiT-B0', '1024x1024', '160k iters', 'no'):
        'cityscapes/segformer_mit_b0_1024x1024_160k.yaml',
    ('seg_benchmark_up', 'cityscapes', 'SegFormer', 'MiT-B1', '1024x1024', '160k iters', 'no'):
        'cityscapes/segformer_mit_b1_1024x1024_160k.yaml',
    ('seg_benchmark_up', 'cityscapes', 'SegFormer', 'MiT-B2', '1024x1024', '160k iters', 'no'):
        'cityscapes/segformer_mit_b2_1024x1024_160k.yaml',
    ('seg_benchmark_up', 'cityscapes', 'SegFormer', 'MiT-B3', '1024x1024', '160k iters', 'no'):
        'cityscapes/segformer_mit_b3_1024x1024_160k.yaml',
    ('seg_benchmark_up', 'cityscapes', 'SegFormer', 'MiT-B4', '1024x1024', '160k iters', 'no'):
        'cityscapes/segformer_mit_b4_1024x1024_160k.yaml',
    ('seg_benchmark_up', 'cityscapes', 'SegFormer', 'MiT-B5', '1024x1024', '160k iters', 'no'):
        'cityscapes/segformer_mit_b5_1024x1024_160k.yaml',
    ('seg_benchmark_up', 'cityscapes', 'FCN (HRNetV2 head)', 'HRNetV2-W18', '1024x1024', '180 epochs', 'no'):
        'cityscapes/fcn_hrnetv2_w18_1024x1024_180e.yaml',
    ('seg_benchmark_up', 'cityscapes', 'FCN (HRNetV2 head)', 'HRNetV2-W18', '1024x1024', '180 epochs', 'yes'):
        'cityscapes/fcn_hrnetv2_w18_1024x1024_180e_ema.yaml',
    ('seg_benchmark_up', 'cityscapes', 'FCN (HRNetV2 head)', 'HRNetV2-W18-Small-v1', '1024x1024', '180 epochs', 'yes'):
        'cityscapes/fcn_hrnetv2_w18_small_v1_1024x1024_180e_ema.yaml',
    ('seg_benchmark_up', 'cityscapes', 'FCN (HRNetV2 head)', 'HRNetV2-W18-Small-v2', '1024x1024', '180 epochs', 'yes'):
        'cityscapes/fcn_hrnetv2_w18_small_v2_1024x1024_180e_ema.yaml',
    ('seg_benchmark_up', 'cityscapes', 'FCN (HRNetV2 head)', 'HRNetV2-W48', '1024x1024', '180 epochs', 'yes'):
        'cityscapes/fcn_hrnetv2_w48_1024x1024_180e_ema.yaml',
    ('seg_benchmark_up', 'cityscapes', 'OCR', 'HRNetV2-W48', '1024x1024', '180 epochs', 'yes'):
        'cityscapes/ocr_hrnetv2_w48_1024x1024_180e_ema.yaml',
    ('internimage_ade20k', 'ade20k', 'UperNet', 'InternImage-T', '512x512', '160k iters', ''):
        'ade20k/upernet_internimage_t_512x512_160k.yaml',
    ('internimage_ade20k', 'ade20k', 'UperNet', 'InternImage-S', '512x512', '160k iters', ''):
        'ade20k/upernet_internimage_s_512x512_160k.yaml',
    ('internimage_ade20k', 'ade20k', 'UperNet', 'InternImage-B', '512x512', '160k iters', ''):
        'ade20k/upernet_internimage_b_512x512_160k.yaml',
    ('internimage_ade20k', 'ade20k', 'UperNet', 'InternImage-L', '640x640', '160k iters', ''):
        'ade20k/upernet_internimage_l_640x640_160k.yaml',
    ('internimage_ade20k', 'ade20k', 'UperNet', 'InternImage-XL', '640x640', '160k iters', ''):
        'ade20k/upernet_internimage_xl_640x640_160k.yaml',
    ('internimage_ade20k', 'ade20k', 'UperNet', 'InternImage-H', '896x896', '160k iters', ''):
        'ade20k/upernet_internimage_h_896x896_160k.yaml',
    ('mmseg_hrnet', 'cityscapes', 'FCN', 'HRNetV2-W18-Small', '512x1024', '40k iters', ''):
        'cityscapes/fcn_hrnetv2_w18_small_512x1024_40k.yaml',
    ('mmseg_hrnet', 'cityscapes', 'FCN', 'HRNetV2-W18', '512x1024', '40k iters', ''):
        'cityscapes/fcn_hrnetv2_w18_512x1024_40k.yaml',
    ('mmseg_hrnet', 'cityscapes', 'FCN', 'HRNetV2-W48', '512x1024', '40k iters', ''):
        'cityscapes/fcn_hrnetv2_w48_512x1024_40k.yaml',
    ('mmseg_hrnet', 'cityscapes', 'FCN', 'HRNetV2-W18-Small', '512x1024', '80k iters', ''):
        'cityscapes/fcn_hrnetv2_w18_small_512x1024_80k.yaml',
    ('mmseg_hrnet', 'cityscapes', 'FCN', 'HRNetV2-W18', '512x1024', '80k iters', ''):
        'cityscapes/fcn_hrnetv2_w18_512x1024_80k.yaml',
    ('mmseg_hrnet', 'cityscapes', 'FCN', 'HRNetV2-W48', '512x1024', '80k iters', ''):
        'cityscapes/fcn_hrnetv2_w48_512x1024_80k.yaml',
    ('mmseg_hrnet', 'cityscapes', 'FCN', 'HRNetV2-W18-Small', '512x1024', '160k iters', ''):
        'cityscapes/fcn_hrnetv2_w18_small_512x1024_160k.yaml',
    ('mmseg_hrnet', 'cityscapes', 'FCN', 'HRNetV2-W18', '512x1024', '160k iters', ''):
        'cityscapes/fcn_hrnetv2_w18_512x1024_160k.yaml',
    ('mmseg_hrnet', 'cityscapes', 'FCN', 'HRNetV2-W48', '512x1024', '160k iters', ''):
        'cityscapes/fcn_hrnetv2_w48_512x1024_160k.yaml',
    ('mmseg_hrnet', 'ade20k', 'FCN', 'HRNetV2-W18-Small', '512x512', '80k iters', ''):
        'ade20k/fcn_hrnetv2_w18_small_512x512_80k.yaml',
    ('mmseg_hrnet', 'ade20k', 'FCN', 'HRNetV2-W18', '512x512', '80k iters', ''):
        'ade20k/fcn_hrnetv2_w18_512x512_80k.yaml',
    ('mmseg_hrnet', 'ade20k', 'FCN', 'HRNetV2-W48', '512x512', '80k iters', ''):
        'ade20k/fcn_hrnetv2_w48_512x512_80k.yaml',
    ('mmseg_hrnet', 'ade20k', 'FCN', 'HRNetV2-W18-Small', '512x512', '160k iters', ''):
        'ade20k/fcn_hrnetv2_w18_small_512x512_160k.yaml',
    ('mmseg_hrnet', 'ade20k', 'FCN', 'HRNetV2-W18', '512x512', '160k iters', ''):
        'ade20k/fcn_hrnetv2_w18_512x512_160k.yaml',
    ('mmseg_hrnet', 'ade20k', 'FCN', 'HRNetV2-W48', '512x512', '160k iters', ''):
        'ade20k/fcn_hrnetv2_w48_512x512_160k.yaml',
    ('mmseg_hrnet', 'voc12aug', 'FCN', 'HRNetV2-W18-Small', '512x512', '20k iters', ''):
        'pascal_voc/fcn_hrnetv2_w18_small_512x512_20k.yaml',
    ('mmseg_hrnet', 'voc12aug', 'FCN', 'HRNetV2-W18', '512x512', '20k iters', ''):
        'pascal_voc/fcn_hrnetv2_w18_512x512_20k.yaml',
    ('mmseg_hrnet', 'voc12aug', 'FCN', 'HRNetV2-W48', '512x512', '20k iters', ''):
        'pascal_voc/fcn_hrnetv2_w48_512x512_20k.yaml',
    ('mmseg_hrnet', 'voc12aug', 'FCN', 'HRNetV2-W18-Small', '512x512', '40k iters', ''):
        'pascal_voc/fcn_hrnetv2_w18_small_512x512_40k.yaml',
    ('mmseg_hrnet', 'voc12aug', 'FCN', 'HRNetV2-W18', '512x512', '40k iters', ''):
        'pascal_voc/fcn_hrnetv2_w18_512x512_40k.yaml',
    ('mmseg_hrnet', 'voc12aug', 'FCN', 'HRNetV2-W48', '512x512', '40k iters', ''):
        'pascal_voc/fcn_hrnetv2_w48_512x512_40k.yaml',
    ('mmseg_hrnet', 'pascal_context', 'FCN', 'HRNetV2-W48', '480x480', '40k iters', ''):
        'pascal_context/fcn_hrnetv2_w48_480x480_40k.yaml',
    ('mmseg_hrnet', 'pascal_context', 'FCN', 'HRNetV2-W48', '480x480', '80k iters', ''):
        'pascal_context/fcn_hrnetv2_w48_480x480_80k.yaml',
    ('mmseg_hrnet', 'pascal_context_59', 'FCN', 'HRNetV2-W48', '480x480', '40k iters', ''):
        'pascal_context_59/fcn_hrnetv2_w48_480x480_40k.yaml',
    ('mmseg_hrnet', 'pascal_context_59', 'FCN', 'HRNetV2-W48', '480x480', '80k iters', ''):
        'pascal_context_59/fcn_hrnetv2_w48_480x480_80k.yaml',
    ('mmseg_hrnet', 'loveda', 'FCN', 'HRNetV2-W18-Small', '512x512', '80k iters', ''):
        'loveda/fcn_hrnetv2_w18_small_512x512_80k.yaml',
    ('mmseg_hrnet', 'loveda', 'FCN', 'HRNetV2-W18', '512x512', '80k iters', ''):
        'loveda/fcn_hrnetv2_w18_512x512_80k.yaml',
    ('mmseg_hrnet', 'loveda', 'FCN', 'HRNetV2-W48', '512x512', '80k iters', ''):
        'loveda/fcn_hrnetv2_w48_512x512_80k.yaml',
    ('mmseg_hrnet', 'potsdam', 'FCN', 'HRNetV2-W18-Small', '512x512', '80k iters', ''):
        'potsdam/fcn_hrnetv2_w18_small_512x512_80k.yaml',
    ('mmseg_hrnet', 'potsdam', 'FCN', 'HRNetV2-W18', '512x512', '80k iters', ''):
        'potsdam/fcn_hrnetv2_w18_512x512_80k.yaml',
    ('mmseg_hrnet', 'potsdam', 'FCN', 'HRNetV2-W48', '512x512', '80k iters', ''):
        'potsdam/fcn_hrnetv2_w48_512x512_80k.yaml',
    ('mmseg_hrnet', 'vaihingen', 'FCN', 'HRNetV2-W18-Small', '512x512', '80k iters', ''):
        'vaihingen/fcn_hrnetv2_w18_small_512x512_80k.yaml',
    ('mmseg_hrnet', 'vaihingen', 'FCN', 'HRNetV2-W18', '512x512', '80k iters', ''):
        'vaihingen/fcn_hrnetv2_w18_512x512_80k.yaml',
    ('mmseg_hrnet', 'vaihingen', 'FCN', 'HRNetV2-W48', '512x512', '80k iters', ''):
        'vaihingen/fcn_hrnetv2_w48_512x512_80k.yaml',
    ('mmseg_hrnet', 'isaid', 'FCN', 'HRNetV2-W18-Small', '896x896', '80k iters', ''):
        'isaid/fcn_hrnetv2_w18_small_896x896_80k.yaml',
    ('mmseg_hrnet', 'isaid', 'FCN', 'HRNetV2-W18', '896x896', '80k iters', ''):
        'isaid/fcn_hrnetv2_w18_896x896_80k.yaml',
    ('mmseg_hrnet', 'isaid', 'FCN', 'HRNetV2-W48', '896x896', '80k iters', ''):
        'isaid/fcn_hrnetv2_w48_896x896_80k.yaml',
    ('sssegmentation_mcibi', 'cocostuff10k', 'DeepLabV3 + MCIBI', 'ResNet-50-D8', '512x512', 'lr 0.001 poly bs16 110 epochs', ''):
        'coco_stuff10k/deeplabv3_mcibi_r50_512x512_110e.yaml',
    ('sssegmentation_mcibi', 'cocostuff10k', 'DeepLabV3 + MCIBI', 'ResNet-101-D8', '512x512', 'lr 0.001 poly bs16 110 epochs', ''):
        'coco_stuff10k/deeplabv3_mcibi_r101_512x512_110e.yaml',
    ('sssegmentation_mcibi', 'cocostuff10k', 'DeepLabV3 + MCIBI', 'ResNeSt-101-D8', '512x512', 'lr 0.001 poly bs32 150 epochs', ''):
        'coco_stuff10k/deeplabv3_mcibi_resnest101_512x512_150e.yaml',
    ('sssegmentation_mcibi', 'cocostuff10k', 'DeepLabV3 + MCIBI', 'HRNetV2-W48', '512x512', 'lr 0.001 poly bs16 110 epochs', ''):
        'coco_stuff10k/deeplabv3_mcibi_hrnetv2_w48_512x512_110e.yaml',
    ('sssegmentation_mcibi', 'cocostuff10k', 'DeepLabV3 + MCIBI', 'ViT-Large', '512x512', 'lr 0.001 poly bs16 110 epochs', ''):
        'coco_stuff10k/deeplabv3_mcibi_vit_large_512x512_110e.yaml',
    ('sssegmentation_mcibi', 'ade20k', 'DeepLabV3 + MCIBI', 'ResNet-50-D8', '512x512', 'lr 0.01 poly bs16 130 epochs', ''):
        'ade20k/deeplabv3_mcibi_r50_512x512_130e.yaml',
    ('sssegmentation_mcibi', 'ade20k', 'DeepLabV3 + MCIBI', 'ResNet-101-D8', '512x512', 'lr 0.01 poly bs16 130 epochs', ''):
        'ade20k/deeplabv3_mcibi_r101_512x512_130e.yaml',
    ('sssegmentation_mcibi', 'ade20k', 'DeepLabV3 + MCIBI', 'ResNeSt-101-D8', '512x512', 'lr 0.004 poly bs16 180 epochs', ''):
        'ade20k/deeplabv3_mcibi_resnest101_512x512_180e.yaml',
    ('sssegmentation_mcibi', 'ade20k', 'DeepLabV3 + MCIBI', 'HRNetV2-W48', '512x512', 'lr 0.004 poly bs16 180 epochs', ''):
        'ade20k/deeplabv3_mcibi_hrnetv2_w48_512x512_180e.yaml',
    ('sssegmentation_mcibi', 'ade20k', 'DeepLabV3 + MCIBI', 'ViT-Large', '512x512', 'lr 0.01 poly bs16 130 epochs', ''):
        'ade20k/deeplabv3_mcibi_vit_large_512x512_130e.yaml',
    ('sssegmentation_mcibi', 'cityscapes', 'DeepLabV3 + MCIBI', 'ResNet-50-D8', '512x1024', 'lr 0.01 poly bs16 440 epochs', ''):
        'cityscapes/deeplabv3_mcibi_r50_512x1024_440e.yaml',
    ('sssegmentation_mcibi', 'cityscapes', 'DeepLabV3 + MCIBI', 'ResNet-101-D8', '512x1024', 'lr 0.01 poly bs16 440 epochs', ''):
        'cityscapes/deeplabv3_mcibi_r101_512x1024_440e.yaml',
    ('sssegmentation_mcibi', 'cityscapes', 'DeepLabV3 + MCIBI', 'ResNeSt-101-D8', '512x1024', 'lr 0.01 poly bs16 500 epochs', ''):
        'cityscapes/deeplabv3_mcibi_resnest101_512x1024_500e.yaml',
    ('sssegmentation_mcibi', 'cityscapes', 'DeepLabV3 + MCIBI', 'HRNetV2-W48', '512x1024', 'lr 0.01 poly bs16 500 epochs', ''):
        'cityscapes/deeplabv3_mcibi_hrnetv2_w48_512x1024_500e.yaml',
    ('sssegmentation_mcibi', 'lip', 'DeepLabV3 + MCIBI', 'ResNet-50-D8', '473x473', 'lr 0.01 poly bs32 150 epochs', ''):
        'lip/deeplabv3_mcibi_r50_473x473_150e.yaml',
    ('sssegmentation_mcibi', 'lip', 'DeepLabV3 + MCIBI', 'ResNet-101-D8', '473x473', 'lr 0.01 poly bs32 150 epochs', ''):
        'lip/deeplabv3_mcibi_r101_473x473_150e.yaml',
    ('sssegmentation_mcibi', 'lip', 'DeepLabV3 + MCIBI', 'ResNeSt-101-D8', '473x473', 'lr 0.007 poly bs40 150 epochs', ''):
        'lip/deeplabv3_mcibi_resnest101_473x473_150e.yaml',
    ('sssegmentation_mcibi', 'lip', 'DeepLabV3 + MCIBI', 'HRNetV2-W48', '473x473', 'lr 0.007 poly bs40 150 epochs', ''):
        'lip/deeplabv3_mcibi_hrnetv2_w48_473x473_150e.yaml',

}

#: Dataset column of the tables -> dataset preset.
DATASET_PRESET = {
    "cityscapes": "cityscapes", "ade20k": "ade20k", "voc12aug": "pascal_voc",
    "pascal_context": "pascal_context", "pascal_context_59": "pascal_context_59",
    "cocostuff10k": "coco_stuff10k_182", "lip": "lip", "loveda": "loveda", "potsdam": "potsdam",
    "vaihingen": "vaihingen", "isaid": "isaid",
}
#: Presets that read another preset's files: recipes/<folder>/ names the prepared dataset.
PRESET_FOLDER = {"coco_stuff10k_182": "coco_stuff10k"}

#: (method, backbone) as the tables write them -> model preset.
MODEL_PRESET = {
    **{("SegFormer", f"MiT-B{i}"): f"segformer_mit_b{i}" for i in range(6)},
    **{("UperNet", f"InternImage-{s}"): f"upernet_internimage_{s.lower()}" for s in ("T", "S", "B", "L", "XL", "H")},
    ("FCN (HRNetV2 head)", "HRNetV2-W18"): "fcn_hrnetv2_w18",
    ("FCN (HRNetV2 head)", "HRNetV2-W18-Small-v1"): "fcn_hrnetv2_w18_small_v1",
    ("FCN (HRNetV2 head)", "HRNetV2-W18-Small-v2"): "fcn_hrnetv2_w18_small",
    ("FCN (HRNetV2 head)", "HRNetV2-W48"): "fcn_hrnetv2_w48",
    ("OCR", "HRNetV2-W48"): "ocr_hrnetv2_w48",
    ("FCN", "HRNetV2-W18-Small"): "fcn_hrnetv2_w18_small",
    ("FCN", "HRNetV2-W18"): "fcn_hrnetv2_w18",
    ("FCN", "HRNetV2-W48"): "fcn_hrnetv2_w48",
    ("DeepLabV3 + MCIBI", "ResNet-50-D8"): "deeplabv3_mcibi_r50",
    ("DeepLabV3 + MCIBI", "ResNet-101-D8"): "deeplabv3_mcibi_r101",
    ("DeepLabV3 + MCIBI", "ResNeSt-101-D8"): "deeplabv3_mcibi_resnest101",
    ("DeepLabV3 + MCIBI", "HRNetV2-W48"): "deeplabv3_mcibi_hrnetv2_w48",
    ("DeepLabV3 + MCIBI", "ViT-Large"): "deeplabv3_mcibi_vit_large",
}

# Published parameter counts (zoo README, "Architectures"). InternImage: UperNet + auxiliary
# head, 150 classes. HRNet: 19 classes; the official W18-Small models have one conv bias more
# in the head (sum of the branch widths) than the mmseg-named FCN head built here.
PUBLISHED_PARAMS: dict[tuple[str, int], int] = {
    ("upernet_internimage_t", 150): 59_077_148,
    ("upernet_internimage_s", 150): 79_866_956,
    ("upernet_internimage_b", 150): 128_387_852,
    ("upernet_internimage_l", 150): 255_600_606,
    ("upernet_internimage_xl", 150): 367_733_000,
    ("upernet_internimage_h", 150): 1_120_338_396,
    ("fcn_hrnetv2_w18_small_v1", 19): 1_540_819 - (16 + 32 + 64 + 128),
    ("fcn_hrnetv2_w18_small", 19): 3_939_579 - (18 + 36 + 72 + 144),
    ("fcn_hrnetv2_w18", 19): 9_640_849,
    ("fcn_hrnetv2_w48", 19): 65_858_659,
    ("ocr_hrnetv2_w48", 19): 70_371_446,
}
#: MiT encoder parameters (the SegFormer rows; their totals depend on the decoder width).
MIT_ENCODER_PARAMS = {
    "segformer_mit_b0": 3_319_392, "segformer_mit_b1": 13_151_424, "segformer_mit_b2": 24_196_288,
    "segformer_mit_b3": 44_072_128, "segformer_mit_b4": 60_842_688, "segformer_mit_b5": 81_443_008,
}


def target_rows() -> list[dict[str, str]]:
    with TARGETS.open(newline="") as f:
        return list(csv.DictReader(f))


def row_key(row: dict[str, str]) -> tuple[str, str, str, str, str, str, str]:
    return (
        row["table"], row["dataset"], row["method"], row["backbone"], row["crop_size"],
        row["schedule"], row["ema"],
    )


def number(text: str) -> float | None:
    return float(text) if text.strip() else None


def zoo_recipe_files() -> list[Path]:
    return sorted(
        p for p in RECIPES.rglob("*")
        if p.suffix in (".yaml", ".yml") and p.relative_to(RECIPES).as_posix() not in NOT_ZOO
    )


ROWS = target_rows()


def test_targets_are_the_73_published_rows_with_distinct_keys():
    assert len(ROWS) == 73
    assert len({row_key(r) for r in ROWS}) == 73
    assert {row_key(r) for r in ROWS} == set(ROW_TO_RECIPE)


def test_recipes_and_rows_correspond_one_to_one():
    files = {p.relative_to(RECIPES).as_posix() for p in zoo_recipe_files()}
    assert len(files) == 73, sorted(files)
    assert len(set(ROW_TO_RECIPE.values())) == 73
    assert files == set(ROW_TO_RECIPE.values())


def test_short_alias_points_at_the_internimage_h_recipe():
    alias = RECIPES / "internimage_h_ade20k.yaml"
    assert alias.is_symlink()
    assert alias.resolve() == (RECIPES / "ade20k/upernet_internimage_h_896x896_160k.yaml").resolve()


def _schedule(row: dict[str, str]) -> tuple[str, int, float | None, int | None]:
    """("iters" | "epochs", length, lr or None, batch or None) from the schedule column."""
    text = row["schedule"]
    if m := re.fullmatch(r"(\d+)k iters", text):
        return "iters", int(m.group(1)) * 1000, None, None
    if m := re.fullmatch(r"(\d+) epochs", text):
        return "epochs", int(m.group(1)), None, None
    m = re.fullmatch(r"lr ([0-9.]+) poly bs(\d+) (\d+) epochs", text)
    assert m, f"unparsed schedule {text!r}"
    return "epochs", int(m.group(3)), float(m.group(1)), int(m.group(2))


@pytest.mark.parametrize("row", ROWS, ids=lambda r: ROW_TO_RECIPE[row_key(r)])
def test_recipe_carries_its_row(row):
    path = RECIPES / ROW_TO_RECIPE[row_key(row)]
    recipe = load_recipe(path).recipe
    where = f"{path.relative_to(REPO)}"

    assert path.read_text().splitlines()[0] == f"# segctl submit {path.relative_to(REPO).as_posix()} --nodes {recipe.cluster.nodes}", where
    assert recipe.data.dataset == DATASET_PRESET[row["dataset"]], where
    assert path.parent.name == PRESET_FOLDER.get(recipe.data.dataset, recipe.data.dataset), where
    assert recipe.model.name == MODEL_PRESET[(row["method"], row["backbone"])], where
    h, w = map(int, row["crop_size"].split("x"))
    assert list(recipe.data.crop_size) == [h, w], where

    kind, length, lr, batch = _schedule(row)
    if kind == "iters":
        assert (recipe.schedule.max_iters, recipe.schedule.max_epochs) == (length, None), where
    else:
        assert (recipe.schedule.max_epochs, recipe.schedule.max_iters) == (length, None), where

    global_batch = recipe.cluster.nodes * recipe.cluster.gpus_per_node * recipe.train.batch_size
    if row["batch_total"]:
        assert global_batch == int(row["batch_total"]), where
    if batch is not None:
        assert global_batch == batch, where
    if row["gpus"]:
        assert recipe.cluster.nodes * recipe.cluster.gpus_per_node == int(row["gpus"]), where
    if lr is not None:
        # The table's lr is that of the heads (ViT-L: the backbone runs at a tenth of it).
        head_lr = recipe.optim.lr * recipe.optim.head_lr_mult
        assert head_lr == pytest.approx(lr), where
        if row["backbone"] == "ViT-Large":  # params_rules backbone_net lr_multiplier 0.1
            assert (recipe.optim.lr, recipe.optim.backbone_lr_mult) == (lr, 0.1), where

    assert (recipe.train.ema_decay is not None) == (row["ema"] == "yes"), where
    if row["ema"] == "yes":  # United-Perception's ExpEMA ramp (ema_type: exp in every EMA row)
        assert recipe.train.ema_ramp_iters == 2000, where

    ref = recipe.reference
    assert ref is not None, where
    assert ref.miou_ss == number(row["miou_ss"]), where
    assert ref.miou_ms_flip == number(row["miou_ms_flip"]), where
    if "test server" in row["eval_split"]:
        assert "test server" in ref.source, where
    if "trainval training" in row["eval_split"]:
        assert recipe.data.train_split == "train+val", where
    else:
        assert recipe.data.train_split in (None, "train", "trainaug"), where


def test_internimage_layer_decay_and_sgd_hrnet_settings():
    """The tradeoff knobs named by the reference configs."""
    for size, rate in {"l": 0.94, "xl": 0.94}.items():
        recipe = load_recipe(RECIPES / f"ade20k/upernet_internimage_{size}_640x640_160k.yaml").recipe
        assert recipe.optim.layer_decay_rate == rate and recipe.optim.grad_clip == 0.1
    h = load_recipe(RECIPES / "ade20k/upernet_internimage_h_896x896_160k.yaml").recipe
    assert h.optim.layer_decay_rate == 0.95
    for path in RECIPES.glob("*/fcn_hrnetv2_*k.yaml"):
        recipe = load_recipe(path).recipe
        context = recipe.data.dataset.startswith("pascal_context")
        assert recipe.optim.type == "sgd" and recipe.optim.momentum == 0.9, path
        assert (recipe.optim.lr, recipe.optim.weight_decay) == ((0.004, 1e-4) if context else (0.01, 5e-4)), path
        assert (recipe.schedule.poly_power, recipe.schedule.min_lr, recipe.schedule.warmup_iters) == (0.9, 1e-4, 0), path


def test_sssegmentation_recipes_centre_their_padding():
    """ssseg Padding centres a crop smaller than crop_size; mmseg's Pad pads bottom-right."""
    centred = 0
    for path in sorted(RECIPES.rglob("*.yaml")):
        if path.name in NOT_ZOO:
            continue
        recipe = load_recipe(path).recipe
        from_ssseg = "sssegmentation" in (recipe.reference.source if recipe.reference else "")
        expected = "center" if from_ssseg else "bottom_right"
        assert recipe.data.pad_position == expected, path
        centred += from_ssseg
    assert centred == 18


def test_lip_recipes_use_the_sssegmentation_lip_augmentations():
    """ssseg/configs/_base_/datasets/lip_473x473.py: Resize (520, 520) keep_ratio False
    x0.75..1.25, RandomFlip with fix_ann_pairs, RandomRotation angle_upper 30 p 0.6."""
    paths = sorted(RECIPES.glob("lip/*.yaml"))
    assert len(paths) == 4
    for path in paths:
        data = load_recipe(path).recipe.data
        assert (data.train_scale, data.ratio_range, data.keep_ratio) == (
            (520, 520), (0.75, 1.25), False), path
        assert data.flip_swap_pairs == [(15, 14), (17, 16), (19, 18)], path
        assert data.random_rotation is not None, path
        assert (data.random_rotation.max_degrees, data.random_rotation.prob) == (30, 0.6), path
    others = [p for p in RECIPES.rglob("*.yaml") if p.parent.name != "lip"]
    for path in others:
        data = load_recipe(path).recipe.data
        # keep_ratio false also in the United-Perception recipes (ratio_sampling halves): their
        # SegRandResize makes the frame (int(w r), int(h r)), which keep_ratio false with
        # train_scale = the 2048x1024 Cityscapes frame gives exactly (mmcv's keep-ratio rescale
        # is a pixel narrower in half of the draws).
        assert data.keep_ratio or (data.ratio_sampling == "halves"
                                   and tuple(data.train_scale) == (2048, 1024)), path
        assert not data.flip_swap_pairs and data.random_rotation is None, path


def test_augmentation_fields_are_validated():
    from segctl.recipe.schema import DataConfig

    base = {"dataset": "lip", "root": "x", "crop_size": [473, 473]}
    with pytest.raises(ValueError, match="each at most once"):
        DataConfig(**base, flip_swap_pairs=[[1, 2], [2, 3]])
    with pytest.raises(ValueError, match="names class 20, but lip has classes 0..19"):
        DataConfig(**base, flip_swap_pairs=[[14, 15], [19, 20]])
    with pytest.raises(ValueError):
        DataConfig(**base, random_rotation={"max_degrees": 0, "prob": 0.5})
    with pytest.raises(ValueError):
        DataConfig(**base, random_rotation={"max_degrees": 30, "prob": 1.5})
    with pytest.raises(ValueError):
        DataConfig(**base, random_rotation={"max_degrees": 30, "prob": 0.5, "fill": 0})


@pytest.fixture(scope="module")
def listed_home(tmp_path_factory) -> Path:
    """The state directory ``listed`` starts empty and leaves holding every parameter count."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def listed(listed_home) -> list[dict]:
    """``recipes list --json`` with an empty state directory: every count is computed."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEGCTL_HOME", str(listed_home))
        result = CliRunner().invoke(app, ["recipes", "list", str(RECIPES), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.mark.slow
def test_list_json_gives_published_parameter_counts(listed):
    by_model = {(e["model"], e["num_classes"]): e["params"] for e in listed}
    for key, published in PUBLISHED_PARAMS.items():
        assert by_model.get(key) == published, key
    zoo = [e for e in listed if Path(e["path"]).name != "quickstart.yaml"]
    assert len(zoo) == 73  # the alias is listed once, under its target
    assert all(isinstance(e["params"], int) and e["params"] > 0 for e in listed)


@pytest.mark.slow
def test_segformer_encoders_match_published_counts(listed):
    import torch

    from trainer.models import build_segmentor, count_parameters

    for e in listed:
        if e["model"] in MIT_ENCODER_PARAMS:
            with torch.device("meta"):
                model = build_segmentor(e["model"], e["num_classes"])
            assert count_parameters(model.backbone) == MIT_ENCODER_PARAMS[e["model"]]
            assert count_parameters(model) == e["params"]


@pytest.mark.slow
def test_list_table_groups_rows_by_dataset(segctl_env, listed, listed_home, monkeypatch):
    monkeypatch.setenv("SEGCTL_HOME", str(listed_home))  # the counts `listed` computed, cached
    result = CliRunner().invoke(app, ["recipes", "list", str(RECIPES)])
    assert result.exit_code == 0, result.output
    headers = [line.split()[1] for line in result.output.splitlines() if line.startswith("DATASET ")]
    assert headers[:2] == ["cityscapes", "ade20k"]
    assert len(headers) == len(set(headers)) == 11
    block = result.output.split("DATASET ade20k", 1)[1].split("DATASET ", 1)[0]
    assert "InternImage-H" in block and "1.12B" in block and "59.90" in block and "60.30" in block


def test_coco_stuff10k_recipes_train_on_the_182_id_space():
    """sssegmentation's COCOStuff10kDataset: num_classes 182, label = raw id - 1; the 11 thing
    ids below are never annotated in COCO-Stuff, so the 171 train ids are the other classes in
    the same order. The MCIBI recipes use the 182-class preset (the mapping is pinned in
    tests/parity/test_sssegmentation.py)."""
    from segctl.recipe.datasets import COCO_STUFF_182_CLASSES, COCO_STUFF_CLASSES

    unannotated = {"street sign", "hat", "shoe", "eye glasses", "plate", "mirror", "window",
                   "desk", "door", "blender", "hair brush"}
    assert len(COCO_STUFF_CLASSES) == 182 - len(unannotated) == 171
    assert not unannotated & set(COCO_STUFF_CLASSES)
    assert [c for c in COCO_STUFF_182_CLASSES if c not in unannotated] == list(COCO_STUFF_CLASSES)
    assert COCO_STUFF_CLASSES[:3] == ("person", "bicycle", "car")
    assert COCO_STUFF_CLASSES[-1] == "wood"
    for path in sorted(RECIPES.glob("coco_stuff10k/*.yaml")):
        assert load_recipe(path).recipe.data.dataset == "coco_stuff10k_182", path
        assert "num_classes 182" in path.read_text(), path
