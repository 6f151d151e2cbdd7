"""The uint8 training pipeline: the CPU stops at uint8, the device casts, normalises and pads.

The contract (``trainer.data.transforms``: ``train_pipeline(normalize_on_device=True)`` ->
``ToUint8Tensor`` -> ``to_device_batch`` / ``BatchNormalize``): for the same draws, labels are
bit-identical to the float path's (``Normalize`` -> ``Pad`` -> ``ToTensor``) and so are the
float32 images -- tolerance zero, because the device computes ``(x - mean) * inv_std`` with
the same float32 constants and the same two roundings as OpenCV on the CPU (the exhaustive
check over every channel and value below is the proof for any image), and fills the pad with
the same 0.0. The recipes' configurations are run on real frames in the ADE20K (JPEG) and
Cityscapes (PNG) layouts.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, default_collate

from trainer.data.layouts import build_dataset
from trainer.data.order import AugmentedDataset
from trainer.data.transforms import (
    BatchNormalize,
    Normalize,
    Pad,
    RandomCrop,
    ToUint8Tensor,
    batch_normalize,
    to_device_batch,
    train_pipeline,
)

CITYSCAPES = ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375))  # the ImageNet preset
PRESETS = [
    CITYSCAPES,
    ((0.485 * 255, 0.456 * 255, 0.406 * 255), (0.229 * 255, 0.224 * 255, 0.225 * 255)),
    ((127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),
    ((104.00698793, 116.66876762, 122.67891434), (1.0, 1.0, 1.0)),
]

#: (name, train_pipeline keyword arguments): the recipes' transform configurations.
CONFIGS = [
    ("mmseg", {}),  # resize 0.5..2, cat-max crop, flip, PhotoMetricDistortion, pad after
    ("no_photometric", {"photometric": None}),
    ("no_ratio_range", {"ratio_range": (1.0, 1.0), "photometric": None}),
    ("up_segformer", {"keep_ratio": False, "ratio_sampling": "halves", "cat_max_ratio": 1.0,
                      "photometric": "up_color_jitter", "pad_order": "before_photometric"}),
    ("up_hrnet", {"keep_ratio": False, "ratio_sampling": "halves", "cat_max_ratio": 1.0,
                  "photometric": "up_brightness", "pad_order": "before_photometric"}),
    ("lip_like", {"rotation": (30, 0.6), "pad_position": "center",
                  "flip_swap_pairs": ((14, 15), (16, 17))}),
]


def _layout_sample(real_data: Path, layout: str):
    if layout == "ade20k":
        dataset = build_dataset("ade20k", real_data / "ade20k", "validation",
                                reduce_zero_label=True)
        return dataset, (2048, 512)
    dataset = build_dataset("cityscapes", real_data / "cityscapes", "val")
    return dataset, (2048, 1024)


def _float_and_uint8(sample: dict, scale, crop, seed: int, mean_std=CITYSCAPES, **kw):
    """The float path's output and the uint8 path's, normalised on the (CPU) device."""
    mean, std = mean_std
    old = train_pipeline(scale, crop, mean, std, seed=seed, **kw)(copy.deepcopy(sample))
    new = train_pipeline(scale, crop, mean, std, seed=seed, normalize_on_device=True,
                         **kw)(copy.deepcopy(sample))
    batch = default_collate([{k: new[k] for k in ("image", "label", "valid_box")}])
    images, labels = to_device_batch(batch, "cpu", batch_normalize(tuple(mean), tuple(std)))
    return old, new, images[0], labels[0]


@pytest.mark.parametrize("mean_std", PRESETS)
def test_device_normalisation_equals_cpu_normalize_for_every_channel_and_value(mean_std):
    """Exhaustive: all 256 values on all 3 channels, so bit-identical for every image."""
    mean, std = mean_std
    values = np.stack([np.arange(256, dtype=np.uint8)] * 3, axis=-1).reshape(16, 16, 3)
    cpu = Normalize(mean, std)({"image": values.copy()})["image"]
    device = BatchNormalize(mean, std)(torch.from_numpy(values)[None])
    assert device.dtype == torch.float32 and device.shape == (1, 3, 16, 16)
    assert device.is_contiguous()
    assert torch.equal(device[0].permute(1, 2, 0), torch.from_numpy(cpu))


@pytest.mark.parametrize("layout", ["ade20k", "cityscapes"])
@pytest.mark.parametrize("name,kw", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_uint8_path_equals_float_path_on_real_frames(real_data, layout, name, kw):
    """Labels and images bit-identical (tolerance 0) to the float path, for the recipes'
    configurations, at a crop inside the frame and at one larger than it (padding)."""
    dataset, layout_scale = _layout_sample(real_data, layout)
    padded = 0
    for index in range(len(dataset)):
        sample = dataset.load(index)
        height, width = sample["image"].shape[:2]
        # the layout's scale and a crop inside; the frame's own scale (ratio <= 2) and a crop
        # larger than any resize of it: every draw pads
        cases = [(layout_scale, (256, 256)), ((width, height), (2 * height + 7, 2 * width + 9))]
        for scale, crop in cases:
            for seed in range(4):
                old, new, image, label = _float_and_uint8(sample, scale, crop, seed, **kw)
                assert new["image"].dtype == torch.uint8 and new["image"].shape[2] == 3
                assert new["label"].dtype == torch.uint8
                assert torch.equal(label, old["label"]), (name, index, crop, seed)
                assert torch.equal(image, old["image"]), (name, index, crop, seed)
                padded += tuple(new["valid_box"][2:].tolist()) != crop
    if kw.get("pad_order") != "before_photometric":
        assert padded > 0, "no draw exercised the device-side pad fill"


def test_pad_is_zero_in_normalised_units_and_ignore_in_labels_at_both_positions():
    """mmseg's semantics kept: the image pad is 0 after normalising (not the raw 0, which
    would normalise to -mean/std), the label pad is the ignore index; centred or not."""
    rng = np.random.default_rng(0)
    sample = {"image": rng.integers(0, 256, (40, 60, 3), dtype=np.uint8),
              "label": np.full((40, 60), 3, np.uint8)}
    for position in ("bottom_right", "center"):
        old, new, image, label = _float_and_uint8(
            sample, (60, 40), (64, 64), 0, ratio_range=(1.0, 1.0), keep_ratio=False,
            cat_max_ratio=1.0, photometric=None, pad_position=position)
        top, left, h, w = new["valid_box"].tolist()
        assert (h, w) == (40, 60) and (top, left) == ((12, 2) if position == "center" else (0, 0))
        assert torch.equal(image, old["image"]) and torch.equal(label, old["label"])
        inside = torch.zeros(64, 64, dtype=torch.bool)
        inside[top:top + h, left:left + w] = True
        assert (image[:, ~inside] == 0).all() and (label[~inside] == 255).all()
        assert (label[inside] == 3).all()


def test_batches_collate_as_uint8_and_normalise_to_the_float_batch(real_data):
    """Through AugmentedDataset and a DataLoader: the batch moves as uint8 (a quarter of the
    float bytes), labels as uint8, and the device gives the float path's batch."""
    dataset, scale = _layout_sample(real_data, "ade20k")
    mean, std = CITYSCAPES
    crop = (480, 640)  # larger than some of the samples: mixed padding within one batch
    kw = {"ratio_range": (0.25, 0.5)}
    new = AugmentedDataset(dataset, train_pipeline(scale, crop, mean, std,
                                                   normalize_on_device=True, **kw))
    old = AugmentedDataset(dataset, train_pipeline(scale, crop, mean, std, **kw))
    keys = [(i, 100 + i) for i in range(len(dataset))]
    batch = next(iter(DataLoader(new, batch_size=len(keys), sampler=keys)))
    reference = next(iter(DataLoader(old, batch_size=len(keys), sampler=keys)))
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (len(keys), *crop, 3)
    assert batch["label"].dtype == torch.uint8 and batch["valid_box"].shape == (len(keys), 4)
    assert batch["image"].nbytes * 4 == reference["image"].nbytes
    images, labels = to_device_batch(batch, "cpu", batch_normalize(mean, std))
    assert torch.equal(images, reference["image"]) and torch.equal(labels, reference["label"])
    assert labels.dtype == torch.int64
    # a float batch passes through unchanged
    same, same_labels = to_device_batch(reference, "cpu", batch_normalize(mean, std))
    assert same is reference["image"] and torch.equal(same_labels, reference["label"])


def test_wide_labels_become_int64_and_bad_inputs_are_refused():
    sample = {"image": np.zeros((4, 5, 3), np.uint8), "label": np.full((4, 5), 300, np.uint16)}
    out = ToUint8Tensor()(sample)
    assert out["label"].dtype == torch.int64 and int(out["label"][0, 0]) == 300
    assert out["valid_box"].tolist() == [0, 0, 4, 5]
    with pytest.raises(ValueError, match="uint8"):
        ToUint8Tensor()({"image": np.zeros((4, 5, 3), np.float32)})
    with pytest.raises(ValueError, match="uint8"):
        BatchNormalize(*CITYSCAPES)(torch.zeros(1, 3, 4, 5))
    with pytest.raises(ValueError, match="fill_on_device"):
        Pad((8, 8), pad_val=1, fill_on_device=True)  # the engine fills with 0 only


def _full_count_decision(crop: RandomCrop, label: np.ndarray) -> bool:
    """mmseg's decision, counting every class (the reference)."""
    counts = np.bincount(label.ravel())
    if crop.ignore_index < counts.size:
        counts[crop.ignore_index] = 0
    counts = counts[counts > 0]
    return bool(counts.size > 1 and counts.max() / counts.sum() < crop.cat_max_ratio)


def test_crop_acceptance_counts_a_few_classes_and_decides_as_a_full_count(real_data):
    labels = [build_dataset("ade20k", real_data / "ade20k", "validation").load(i)["label"]
              for i in range(3)]
    labels.append(build_dataset("cityscapes", real_data / "cityscapes", "val").load(0)["label"])
    rng = np.random.default_rng(0)
    checked = 0
    for ratio, ignore in ((0.75, 255), (0.5, 255), (0.9, 0), (1.0, 255), (0.3, 255)):
        crop = RandomCrop((8, 8), ratio, ignore)
        for label in labels:
            for _ in range(40):
                h, w = (int(rng.integers(1, n + 1)) for n in label.shape)
                y, x = int(rng.integers(0, label.shape[0] - h + 1)), int(
                    rng.integers(0, label.shape[1] - w + 1))
                window = label[y:y + h, x:x + w]
                assert crop.acceptable(window) == _full_count_decision(crop, window)
                checked += 1
    edge = [np.full((8, 8), 3), np.full((8, 8), 255), np.r_[np.full(48, 1), np.full(16, 2)],
            np.r_[np.full(47, 1), np.full(17, 2)], np.r_[np.full(48, 1), np.full(16, 255)],
            np.arange(64), np.r_[np.full(3, 1), np.full(1, 2), np.full(60, 255)]]
    for ignore in (255, 0):
        crop = RandomCrop((8, 8), 0.75, ignore)
        for label in edge:
            label = label.astype(np.uint8).reshape(8, 8)
            assert crop.acceptable(label) == _full_count_decision(crop, label)
    assert checked == 5 * len(labels) * 40


@pytest.mark.slow
def test_a_training_step_on_the_uint8_batch_equals_one_on_the_float_batch(
        real_data, tmp_path):
    """The same step, one model fed the uint8 batch, a copy fed the float batch: same loss,
    same weights after the step (bit for bit: the inputs are)."""
    from tests.trainer_runs import small_recipe
    from trainer.distributed import build_accelerator
    from trainer.engine import train_step
    from trainer.models import build_segmentor

    recipe = small_recipe(real_data / "cityscapes", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mean, std = CITYSCAPES
    dataset, scale = _layout_sample(real_data, "cityscapes")
    kw = {"scale": (256, 128), "crop_size": (64, 96), "mean": mean, "std": std}
    keys = [(0, 1), (0, 2)]
    new = AugmentedDataset(dataset, train_pipeline(**kw, normalize_on_device=True))
    old = AugmentedDataset(dataset, train_pipeline(**kw))
    uint8_batch = next(iter(DataLoader(new, batch_size=2, sampler=keys)))
    float_batch = next(iter(DataLoader(old, batch_size=2, sampler=keys)))
    assert uint8_batch["image"].dtype == torch.uint8
    images, _ = to_device_batch(uint8_batch, "cpu", batch_normalize(mean, std))
    assert torch.equal(images, float_batch["image"])

    torch.manual_seed(0)
    model = build_segmentor("segformer_mit_b0", num_classes=19).train()
    twin = copy.deepcopy(model)
    accelerator = build_accelerator("fp32")
    losses, weights = [], []
    for net, batch in ((model, uint8_batch), (twin, float_batch)):
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
        torch.manual_seed(1)  # the same drop-path and dropout draws
        losses.append(train_step(net, optimizer, batch, accelerator, recipe))
        weights.append(net.state_dict())
    assert torch.equal(losses[0], losses[1])
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
