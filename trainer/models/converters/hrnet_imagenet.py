"""HRNet ImageNet classification checkpoints -> the HRNetV2 backbone of :mod:`trainer.models.hrnet`.

Source format: HRNet/HRNet-Image-Classification@f760c988 ``lib/models/cls_hrnet.py``
(``HighResolutionNet``): the stem ``conv1``, ``bn1``, ``conv2``, ``bn2``, ``layer1``,
``transition{1,2,3}``, ``stage{2,3,4}`` (``branches``, ``fuse_layers``) - the names mmseg's
``HRNet`` and this project's backbone use as well - plus the classification head, which the
segmentation backbone lacks (:data:`CLASSIFIER_PREFIXES`): ``incre_modules`` (one Bottleneck
per branch to 32/64/128/256 x 4 channels), ``downsamp_modules`` (3x3 stride-2 conv with bias +
BN), ``final_layer`` (1x1 conv 1024 -> 2048 with bias + BN) and ``classifier`` (Linear(2048,
1000)). The files are bare state dicts. The same layout is found in:

* the official ``hrnetv2_w*_imagenet_pretrained.pth`` and OpenMMLab's copies of them,
  ``https://download.openmmlab.com/pretrain/third_party/hrnetv2_w{18_small,18,48}-*.pth``
  (``open-mmlab://msra/hrnetv2_w*``; mmseg's non-strict load lists exactly the head as
  unexpected keys, open-mmlab/mmsegmentation#840);
* the SSLD files converted from PaddleClas, ``HRNet_W{18,48}_C_ssld_pretrained.pth``
  (HRNet-Image-Classification README, "converted from PaddlePaddle", listed in the same table as
  the cls_hrnet models; United-Perception loads them by these names into its ``hrnet`` encoder,
  ``up/tasks/seg/models/encoder/hrnet.py``). A conversion from Paddle may lack the BN
  ``num_batches_tracked`` counters: they are added as 0, as PyTorch's BatchNorm does for old
  state dicts;
* timm's ports, ``v0.1-hrnet/hrnet_w18_small_v1-*.pth`` (huggingface/pytorch-image-models
  ``timm/models/hrnet.py``, ``HighResolutionNet(head='classification')``: same module names;
  huggingface/pytorch-image-models#232 lists ``downsamp_modules``, ``final_layer`` and
  ``classifier`` as the keys a features-only model cannot take).

Conversion: the head is dropped, the rest goes through
:func:`trainer.models.converters.hrnet_official.convert_hrnet_official` with ``head="none"``
(names unchanged, ``module.``/``model.`` wrappers removed, unknown keys refused).
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from trainer.models.converters.hrnet_official import convert_hrnet_official

CLASSIFIER_PREFIXES = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")
_BACKBONE_MARKERS = ("transition1.", "stage2.")
_WRAPPERS = ("module.", "model.")


def _bare(key: str) -> str:
    for prefix in _WRAPPERS:
        key = key.removeprefix(prefix)
    return key


def is_hrnet_imagenet(keys: list[str]) -> bool:
    """Whether the keys are an HRNet classification file: HRNet backbone names (``stage2.``,
    ``transition1.``) together with the classification head (:data:`CLASSIFIER_PREFIXES`)."""
    bare = [_bare(k) for k in keys]
    return (any(k.startswith(_BACKBONE_MARKERS) for k in bare)
            and any(k.startswith(CLASSIFIER_PREFIXES) for k in bare))


def convert_hrnet_imagenet(
    state_dict: Mapping[str, Tensor],
) -> tuple[dict[str, Tensor], list[str]]:
    """The backbone part of an HRNet ImageNet classification state dict.

    Returns:
        ``(backbone_state, dropped)``: keys relative to the backbone (load into
        ``model.backbone``; BN ``num_batches_tracked`` added as 0 where absent) and the dropped
        classification-head keys.

    Raises:
        ValueError: keys that are neither HRNet backbone nor classification head (listed).
    """
    dropped = sorted(k for k in state_dict if _bare(k).startswith(CLASSIFIER_PREFIXES))
    kept = {k: v for k, v in state_dict.items() if not _bare(k).startswith(CLASSIFIER_PREFIXES)}
    converted = convert_hrnet_official(kept, head="none")
    return {k.removeprefix("backbone."): v for k, v in converted.items()}, dropped
