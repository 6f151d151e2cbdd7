"""The loss resizes logits to the label size with the segmentor's ``align_corners``.

mmseg's ``BaseDecodeHead.loss_by_feat`` resizes with its head's ``align_corners``;
United-Perception's HRNet heads (ModelTC/United-Perception@52aaeb9ed27a
``up/tasks/seg/models/decoder/ocrnet.py``, ``Seghead`` and ``OCR``) upsample their logits to the
crop with ``nn.UpsamplingBilinear2d`` (align_corners True) before ``seg_ohem``, its SegFormer
decoder (``decoder/segformer_decoder.py``) with ``F.interpolate(align_corners=False)``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.trainer_runs import small_recipe
from trainer.models import build_segmentor
from trainer.models.losses import (
    ohem_cross_entropy,
    ohem_kept_cross_entropy,
    pixel_cross_entropy,
    segmentation_loss,
)


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 9, 13, generator=gen) * 3
    labels = torch.randint(0, 5, (2, 33, 49), generator=gen)
    labels[:, :4] = 255
    return logits, labels


@pytest.mark.parametrize("ohem,style", [(None, "mmseg_sampler"), ((0.7, 100), "mmseg_sampler"),
                                        ((0.9, 1000), "up_seg_ohem")])
def test_segmentation_loss_resizes_with_align_corners(batch, ohem, style):
    logits, labels = batch
    outputs = {"decode": logits, "aux": logits.flip(1)}
    weights = {"aux": 0.4}
    total, parts = segmentation_loss(outputs, labels, weights=weights, ohem=ohem,
                                     ohem_style=style, align_corners=True)
    # UP's order: upsample to the label size with UpsamplingBilinear2d, then the loss at full size
    upsample = nn.UpsamplingBilinear2d(size=labels.shape[1:])
    full = {name: upsample(value) for name, value in outputs.items()}
    expected, expected_parts = segmentation_loss(full, labels, weights=weights, ohem=ohem,
                                                 ohem_style=style)
    torch.testing.assert_close(total, expected, rtol=0, atol=0)
    assert parts.keys() == expected_parts.keys()
    # the default (and every model with align_corners False) keeps the False resize
    default, _ = segmentation_loss(outputs, labels, weights=weights, ohem=ohem, ohem_style=style)
    unaligned = {name: F.interpolate(value, size=labels.shape[1:], mode="bilinear",
                                     align_corners=False) for name, value in outputs.items()}
    torch.testing.assert_close(
        default, segmentation_loss(unaligned, labels, weights=weights, ohem=ohem,
                                   ohem_style=style)[0], rtol=0, atol=0)
    assert not torch.isclose(default, total)


def test_each_loss_takes_align_corners(batch):
    logits, labels = batch
    up = nn.UpsamplingBilinear2d(size=labels.shape[1:])(logits)
    torch.testing.assert_close(pixel_cross_entropy(logits, labels, align_corners=True),
                               pixel_cross_entropy(up, labels), rtol=0, atol=0)
    torch.testing.assert_close(ohem_cross_entropy(logits, labels, 0.7, 100, align_corners=True),
                               ohem_cross_entropy(up, labels, 0.7, 100), rtol=0, atol=0)
    torch.testing.assert_close(
        ohem_kept_cross_entropy(logits, labels, 0.9, 1000, align_corners=True),
        ohem_kept_cross_entropy(up, labels, 0.9, 1000), rtol=0, atol=0)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.slow
def test_train_step_resizes_as_the_model(tmp_path, align_corners):
    from trainer.distributed import build_accelerator, teardown
    from trainer.engine import train_step

    recipe = small_recipe(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}")
    torch.manual_seed(0)
    model = build_segmentor("fcn_hrnetv2_w18_small_v1", num_classes=19,
                            align_corners=align_corners, fuse_align_corners=align_corners).train()
    images = torch.randn(2, 3, 64, 96)
    labels = torch.randint(0, 19, (2, 64, 96))
    with torch.no_grad():
        outputs = model(images)
        want, _ = segmentation_loss(outputs, labels, align_corners=align_corners)
        other, _ = segmentation_loss(outputs, labels, align_corners=not align_corners)
    assert not torch.isclose(want, other)
    accelerator = build_accelerator("fp32")
    try:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        loss = train_step(model, optimizer, {"image": images, "label": labels}, accelerator,
                          recipe)
        torch.testing.assert_close(loss, want)
    finally:
        teardown(accelerator)
