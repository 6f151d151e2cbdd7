"""Official HRNet-Semantic-Segmentation checkpoints -> mmseg parameter names.

Source format: HRNet/HRNet-Semantic-Segmentation ``lib/models/seg_hrnet.py`` (HRNetV2 + FCN
head ``last_layer``) and ``lib/models/seg_hrnet_ocr.py`` (HRNetV2 + OCR: ``aux_head``,
``conv3x3_ocr``, ``ocr_gather_head``, ``ocr_distri_head``, ``cls_head``); trained checkpoints
wrap the model in ``FullModel`` (keys prefixed ``model.``, the loss's class weights under
``loss.``), sometimes also in DataParallel (``module.``). Target: the models of
:mod:`trainer.models.hrnet_zoo` (mmsegmentation 1.x names).

Mapping (after the prefixes are stripped):

* backbone (``conv1``, ``bn1``, ``conv2``, ``bn2``, ``layer1``, ``transition*``, ``stage*``):
  same names under ``backbone.``;
* FCN: ``last_layer.0`` -> ``decode_head.convs.0.conv``, ``last_layer.1`` ->
  ``decode_head.convs.0.bn``, ``last_layer.3`` -> ``decode_head.conv_seg``;
* OCR: ``aux_head.{0,1,3}`` -> ``decode_head.0.{convs.0.conv, convs.0.bn, conv_seg}``,
  ``conv3x3_ocr.{0,1}`` -> ``decode_head.1.bottleneck.{conv,bn}``,
  ``ocr_distri_head.object_context_block.f_pixel/f_object/f_down/f_up`` ->
  ``decode_head.1.object_context_block.query_project/key_project/value_project/out_project``,
  ``ocr_distri_head.conv_bn_dropout`` -> ``decode_head.1.object_context_block.bottleneck``,
  ``cls_head`` -> ``decode_head.1.conv_seg``.

Conv biases without an mmseg slot (``last_layer.0``, ``aux_head.0``, ``conv3x3_ocr.0``: the
official convs there have a bias, mmseg's ConvModule before BN has none) are folded into the
following BatchNorm's running mean: ``BN(conv(x) + b)`` with running mean ``m`` equals
``BN(conv(x))`` with running mean ``m - b``, exactly, in eval mode; in training mode BN removes
any per-channel constant anyway. The converted model therefore has ``sum(widths)`` (FCN) or
``sum(widths) + 512`` (OCR) fewer parameters and the same eval outputs.

Numerics differ between the two codebases in the upsampling, not in the weights: the official
configs use ``ALIGN_CORNERS: True`` for the fusion layers, the head's concatenation and the
final resize. Build the model with ``align_corners=True, fuse_align_corners=True`` to evaluate
official weights as they were trained. The official OCR's Dropout2d(0.05) after the object
context has no parameters and no mmseg counterpart (no effect at evaluation).

Also dropped: the ImageNet classification layers of the official ImageNet-pretrained HRNet files
(``incre_modules``, ``downsamp_modules``, ``final_layer``, ``classifier``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor

BACKBONE_PREFIXES = ("conv1.", "bn1.", "conv2.", "bn2.", "layer1.", "transition", "stage")
IGNORED_PREFIXES = ("loss.", "incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")
WRAPPER_PREFIXES = ("module.", "model.")
BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"

# (official conv bias, the BN that follows it) pairs whose bias is folded into the BN.
FOLDED_BIASES = {
    "fcn": (("last_layer.0.bias", "last_layer.1."),),
    "ocr": (("aux_head.0.bias", "aux_head.1."), ("conv3x3_ocr.0.bias", "conv3x3_ocr.1.")),
}


def ocr_attention_rules(
    src: str, ours: str, num_convs: int, modules_per_conv: int, bn_suffix: str = ""
) -> list[tuple[str, str]]:
    """Rules mapping one OCR attention projection, a ``Sequential`` of ``num_convs`` (conv, BN,
    ...) groups of ``modules_per_conv`` modules each, onto mmseg's ConvModule stack
    ``decode_head.1.object_context_block.<ours>[.k].{conv,bn}``.

    Args:
        src: regex of the source module's key prefix (e.g. ``ocr_distri_head\\.object_context_
            block\\.f_pixel``).
        ours: the mmseg projection name (``query_project``, ``key_project``, ...).
        num_convs: conv groups in the projection (a single one has no ``.k`` index in mmseg).
        modules_per_conv: 2 for the official ``(conv, BNReLU)``, 3 for United-Perception's
            ``(conv, BN, ReLU)``.
        bn_suffix: regex between the BN's index and its parameter name (official: ``(?:\\.0)?``
            as BNReLU is ``Sequential(BatchNorm2d, ReLU)`` or, in older code, an in-place ABN).
    """
    dst = f"decode_head.1.object_context_block.{ours}"
    rules = []
    for k in range(num_convs):
        slot = f"{dst}.{k}" if num_convs > 1 else dst
        conv = modules_per_conv * k
        rules.append((rf"^{src}\.{conv}\.weight$", f"{slot}.conv.weight"))
        rules.append((rf"^{src}\.{conv + 1}{bn_suffix}\.{BN}$", rf"{slot}.bn.\1"))
    return rules


def _attention_rules(official: str, ours: str, num_convs: int) -> list[tuple[str, str]]:
    """Rules for one official ``Sequential(conv, BNReLU, ...)`` projection."""
    return ocr_attention_rules(rf"ocr_distri_head\.object_context_block\.{official}", ours,
                               num_convs, modules_per_conv=2, bn_suffix=r"(?:\.0)?")


HEAD_RULES: dict[str, list[tuple[str, str]]] = {
    "fcn": [
        (r"^last_layer\.0\.weight$", "decode_head.convs.0.conv.weight"),
        (rf"^last_layer\.1\.{BN}$", r"decode_head.convs.0.bn.\1"),
        (r"^last_layer\.3\.(weight|bias)$", r"decode_head.conv_seg.\1"),
    ],
    "ocr": [
        (r"^aux_head\.0\.weight$", "decode_head.0.convs.0.conv.weight"),
        (rf"^aux_head\.1\.{BN}$", r"decode_head.0.convs.0.bn.\1"),
        (r"^aux_head\.3\.(weight|bias)$", r"decode_head.0.conv_seg.\1"),
        (r"^conv3x3_ocr\.0\.weight$", "decode_head.1.bottleneck.conv.weight"),
        (rf"^conv3x3_ocr\.1\.{BN}$", r"decode_head.1.bottleneck.bn.\1"),
        *_attention_rules("f_pixel", "query_project", 2),
        *_attention_rules("f_object", "key_project", 2),
        *_attention_rules("f_down", "value_project", 1),
        *_attention_rules("f_up", "out_project", 1),
        (
            r"^ocr_distri_head\.conv_bn_dropout\.0\.weight$",
            "decode_head.1.object_context_block.bottleneck.conv.weight",
        ),
        (
            rf"^ocr_distri_head\.conv_bn_dropout\.1(?:\.0)?\.{BN}$",
            r"decode_head.1.object_context_block.bottleneck.bn.\1",
        ),
        (r"^cls_head\.(weight|bias)$", r"decode_head.1.conv_seg.\1"),
    ],
    "none": [],
}


def _strip_wrappers(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
    return key


def detect_head(keys: list[str]) -> str:
    """``"fcn"``, ``"ocr"`` or ``"none"`` (backbone only) from unwrapped official key names."""
    if any(k.startswith(("aux_head.", "cls_head.", "conv3x3_ocr.")) for k in keys):
        return "ocr"
    if any(k.startswith("last_layer.") for k in keys):
        return "fcn"
    return "none"



def fold_biases_into_running_means(
    state: dict[str, Tensor], pairs: tuple[tuple[str, str], ...]
) -> None:
    """Fold the bias of a conv that feeds a BatchNorm into that BN's running mean, in place.

    ``BN(W x + b) = gamma (W x + b - mean) / sqrt(var + eps) + beta = BN'(W x)`` with
    ``mean' = mean - b`` (inference: BN normalises with its running statistics), so a
    bias-free conv with ``running_mean - b`` gives the same output.

    Args:
        state: a state dict; modified in place.
        pairs: ``(bias key, BN key prefix)`` pairs, e.g. ``("last_layer.0.bias",
            "last_layer.1.")``; a pair whose bias is absent is skipped.

    Raises:
        ValueError: a bias whose BN has no ``running_mean`` in ``state``.
    """
    for bias_key, bn_prefix in pairs:
        if bias_key not in state:
            continue
        mean_key = bn_prefix + "running_mean"
        if mean_key not in state:
            raise ValueError(f"cannot fold {bias_key}: {mean_key} is missing")
        bias = state.pop(bias_key)
        state[mean_key] = state[mean_key] - bias.to(state[mean_key].dtype)


def convert_hrnet_official(
    state_dict: Mapping[str, Tensor], *, head: str | None = None
) -> dict[str, Tensor]:
    """Rename an official HRNet-Semantic-Segmentation state dict to mmseg names.

    Args:
        state_dict: official tensors (any dtype; BN statistics float), keys optionally prefixed
            ``model.`` and/or ``module.``.
        head: ``"fcn"`` (seg_hrnet), ``"ocr"`` (seg_hrnet_ocr), ``"none"`` (backbone only, e.g.
            ImageNet-pretrained files) or None to detect it from the keys.

    Returns:
        A new dict with the keys of the matching :mod:`trainer.models.hrnet_zoo` model (backbone
        keys under ``backbone.``): load it with ``model.load_state_dict(sd, strict=True)``
        (for ``"none"``, into ``model.backbone`` after removing ``backbone.``). Tensors are
        shared with the input except the BN running means that absorb a folded bias; BN
        ``num_batches_tracked`` counters absent in old checkpoints are added as 0.

    Raises:
        ValueError: unknown ``head``; keys that are neither backbone, head nor ignored (listed
            in the message); a folded bias whose BN running mean is missing.
    """
    unwrapped = {_strip_wrappers(k): v for k, v in state_dict.items()}
    if head is None:
        head = detect_head(list(unwrapped))
    if head not in HEAD_RULES:
        raise ValueError(f"head must be one of {sorted(HEAD_RULES)} or None, got {head!r}")
    unwrapped = {k: v for k, v in unwrapped.items() if not k.startswith(IGNORED_PREFIXES)}

    fold_biases_into_running_means(unwrapped, FOLDED_BIASES.get(head, ()))

    rules = [(re.compile(pattern), target) for pattern, target in HEAD_RULES[head]]
    converted: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in unwrapped.items():
        if key.startswith(BACKBONE_PREFIXES):
            converted["backbone." + key] = value
            continue
        for pattern, target in rules:
            if pattern.match(key):
                converted[pattern.sub(target, key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"{len(unknown)} keys have no mmseg counterpart for head={head!r}: "
            + ", ".join(sorted(unknown)[:20])
            + (" ..." if len(unknown) > 20 else "")
        )

    for key in [k for k in converted if k.endswith(".running_mean")]:
        counter = key[: -len("running_mean")] + "num_batches_tracked"
        converted.setdefault(counter, torch.tensor(0, dtype=torch.long))
    return converted
