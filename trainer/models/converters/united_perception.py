"""United-Perception (UP) segmentation checkpoints -> mmseg parameter names.

Source: ModelTC/United-Perception@52aaeb9ed27a (the ``up/tasks/seg`` code and the saver are the
same at the ``0.2.0_github`` tag that published the seg benchmark's checkpoints):

* the model is a ``ModelHelper`` (``up/models/model_helper.py``) holding the config's ``net``
  entries as children named ``encoder`` and ``decoder``, so every key starts ``encoder.`` or
  ``decoder.``;
* ``BaseRunner.get_dump_dict`` (``up/runner/base_runner.py``) saves ``{"epoch", "iter",
  "optimizer", "model", "lr_scheduler"}`` plus ``"ema": ExpEMA.state_dict()`` =
  ``{"ema_state_dict", "decay", "warmup", "inner_T"}`` (``up/utils/model/ema_helper.py``) when
  the config enables EMA; the ``model`` entry of a distributed run has ``module.``-prefixed keys
  (``DistModule``), the EMA copy none. The ``auto_save_best`` hook
  (``up/utils/general/hook_helper.py`` ``AutoSaveBest._save_best``) writes the weights under
  ``state_dict`` instead, with ``ema`` ``{}`` when there is no EMA. UP evaluates, and loads a
  ``pretrain_model``, with the EMA weights when present (``Saver.load_pretrain_or_resume``,
  ``up/utils/general/saver_helper.py``); :func:`trainer.models.converters.pretrained.
  unwrap_checkpoint` does the same.

Mapping (``encoder`` -> ``backbone``, same inner names):

* encoders: ``mit_b*`` (``up/tasks/seg/models/encoder/segformer_encoder.py``: ``layers.i.0``
  PatchEmbed ``projection``/``norm``, ``layers.i.1.j`` blocks ``norm1``, ``attn.attn.in_proj_*``,
  ``attn.attn.out_proj``, ``attn.sr``, ``attn.norm``, ``norm2``, ``ffn.layers.{0,1,4}``,
  ``layers.i.2`` norm) and ``hrnet*`` (``encoder/hrnet.py``: ``conv1``, ``bn1``, ``conv2``,
  ``bn2``, ``layer1``, ``transition*``, ``stage*``) use mmseg's names already;
* ``segformer_decoder`` (``decoder/segformer_decoder.py``: ``convs.i`` and ``fusion_conv`` are
  ``ConvBnRelu`` with ``conv``/``bn``, then ``conv_seg``): mmseg's ``SegformerHead`` names,
  ``decoder.`` -> ``decode_head.``;
* ``hr_seg_head`` (``decoder/ocrnet.py`` ``Seghead``: ``last_layer`` = conv 1x1 with bias, BN,
  ReLU, conv 1x1): ``last_layer.0`` -> ``decode_head.convs.0.conv``, ``last_layer.1`` ->
  ``decode_head.convs.0.bn``, ``last_layer.3`` -> ``decode_head.conv_seg``;
* ``ocr_head`` (``decoder/ocrnet.py`` ``OCR``): ``aux_head.{0,1,3}`` ->
  ``decode_head.0.{convs.0.conv, convs.0.bn, conv_seg}``; ``conv3x3_ocr.{0,1}`` ->
  ``decode_head.1.bottleneck.{conv,bn}``; ``ocr_distri_head.object_context_block`` (UP's
  ``_ObjectAttentionBlock``, plain ``Sequential(conv, BN, ReLU, conv, BN, ReLU)`` stacks, so
  the second conv is at index 3, not 2 as in the official HRNet code): ``f_pixel.{0,1,3,4}`` ->
  ``query_project.{0.conv, 0.bn, 1.conv, 1.bn}``, ``f_object`` likewise -> ``key_project``,
  ``f_down.{0,1}`` -> ``value_project.{conv,bn}``, ``f_up.{0,1}`` -> ``out_project.{conv,bn}``
  (all under ``decode_head.1.object_context_block.``); ``ocr_distri_head.conv_bn_dropout.{0,1}``
  -> ``decode_head.1.object_context_block.bottleneck.{conv,bn}``; ``cls_head`` ->
  ``decode_head.1.conv_seg``.

Folded conv biases: UP's first ``hr_seg_head`` conv (``last_layer.0``), the OCR ``aux_head.0``
and ``conv3x3_ocr.0`` have a bias (``nn.Conv2d`` default ``bias=True`` in
``decoder/ocrnet.py``) and a BatchNorm right after; segctl's (mmseg's) ConvModule there has
none. For a BatchNorm with running mean ``m``, running variance ``v``, scale ``g``, shift
``beta``::

    BN(Wx + b) = g * (Wx + b - m) / sqrt(v + eps) + beta = BN'(Wx),
    BN' = the same BatchNorm with running_mean' = m - b,

exactly in evaluation mode (in training mode BatchNorm subtracts the batch mean, which removes
any per-channel constant such as ``b``). The converter therefore drops the bias and stores
``m - b`` as the running mean: the converted model gives UP's logits up to float rounding.

BatchNorm ``num_batches_tracked`` counters absent from a file (e.g. linklink's SyncBatchNorm)
are added as 0; the decoders' loss modules (``decoder.loss``) have no tensors, any that appear
are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor

from trainer.models.converters.hrnet_official import (
    BN,
    fold_biases_into_running_means,
    ocr_attention_rules,
)

ENCODER = "encoder."
DECODER = "decoder."
DROPPED_PREFIXES = ("decoder.loss.",)

#: (UP conv bias, the BatchNorm after it) pairs whose bias is folded into the running mean.
FOLDED_BIASES: dict[str, tuple[tuple[str, str], ...]] = {
    "fcn": (("decoder.last_layer.0.bias", "decoder.last_layer.1."),),
    "ocr": (
        ("decoder.aux_head.0.bias", "decoder.aux_head.1."),
        ("decoder.conv3x3_ocr.0.bias", "decoder.conv3x3_ocr.1."),
    ),
}


def _ocr_attention_rules(up: str, ours: str, num_convs: int) -> list[tuple[str, str]]:
    """Rules for one UP ``Sequential(conv, BN, ReLU[, conv, BN, ReLU])`` -> mmseg ConvModules."""
    return ocr_attention_rules(rf"decoder\.ocr_distri_head\.object_context_block\.{up}", ours,
                               num_convs, modules_per_conv=3)


#: Decoder rules per UP head type: (regex on the UP key, replacement).
DECODER_RULES: dict[str, list[tuple[str, str]]] = {
    "segformer": [(rf"^decoder\.((?:convs\.\d+|fusion_conv)\.(?:conv\.weight|bn\.{BN})"
                   r"|conv_seg\.(?:weight|bias))$", r"decode_head.\1")],
    "fcn": [
        (r"^decoder\.last_layer\.0\.weight$", "decode_head.convs.0.conv.weight"),
        (rf"^decoder\.last_layer\.1\.{BN}$", r"decode_head.convs.0.bn.\1"),
        (r"^decoder\.last_layer\.3\.(weight|bias)$", r"decode_head.conv_seg.\1"),
    ],
    "ocr": [
        (r"^decoder\.aux_head\.0\.weight$", "decode_head.0.convs.0.conv.weight"),
        (rf"^decoder\.aux_head\.1\.{BN}$", r"decode_head.0.convs.0.bn.\1"),
        (r"^decoder\.aux_head\.3\.(weight|bias)$", r"decode_head.0.conv_seg.\1"),
        (r"^decoder\.conv3x3_ocr\.0\.weight$", "decode_head.1.bottleneck.conv.weight"),
        (rf"^decoder\.conv3x3_ocr\.1\.{BN}$", r"decode_head.1.bottleneck.bn.\1"),
        *_ocr_attention_rules("f_pixel", "query_project", 2),
        *_ocr_attention_rules("f_object", "key_project", 2),
        *_ocr_attention_rules("f_down", "value_project", 1),
        *_ocr_attention_rules("f_up", "out_project", 1),
        (r"^decoder\.ocr_distri_head\.conv_bn_dropout\.0\.weight$",
         "decode_head.1.object_context_block.bottleneck.conv.weight"),
        (rf"^decoder\.ocr_distri_head\.conv_bn_dropout\.1\.{BN}$",
         r"decode_head.1.object_context_block.bottleneck.bn.\1"),
        (r"^decoder\.cls_head\.(weight|bias)$", r"decode_head.1.conv_seg.\1"),
    ],
    "none": [],
}
HEADS = tuple(DECODER_RULES)


def is_united_perception(keys: list[str]) -> bool:
    """Whether unwrapped keys are a UP ``ModelHelper``'s: every key starts ``encoder.`` or
    ``decoder.`` (optionally after ``module.``), and at least one ``encoder.``."""
    bare = [k.removeprefix("module.") for k in keys]
    return bool(bare) and all(k.startswith((ENCODER, DECODER)) for k in bare) and any(
        k.startswith(ENCODER) for k in bare)


def detect_decoder(keys: list[str]) -> str:
    """The UP decoder type from its keys: ``"ocr"`` (``ocr_head``), ``"fcn"``
    (``hr_seg_head``), ``"segformer"`` (``segformer_decoder``) or ``"none"`` (encoder only)."""
    bare = [k.removeprefix("module.") for k in keys]
    if any(k.startswith(("decoder.cls_head.", "decoder.aux_head.", "decoder.conv3x3_ocr."))
           for k in bare):
        return "ocr"
    if any(k.startswith("decoder.last_layer.") for k in bare):
        return "fcn"
    if any(k.startswith(("decoder.fusion_conv.", "decoder.convs.")) for k in bare):
        return "segformer"
    return "none"


def convert_united_perception(
    state_dict: Mapping[str, Tensor], *, head: str | None = None
) -> tuple[dict[str, Tensor], list[str]]:
    """Rename a UP segmentation state dict to the names of :mod:`trainer.models`.

    Args:
        state_dict: the unwrapped UP model (``model``, ``state_dict`` or
            ``ema["ema_state_dict"]`` entry), keys ``encoder.*`` / ``decoder.*``, optionally all
            prefixed ``module.``; float tensors (BN counters int64).
        head: one of :data:`HEADS` (``"segformer"``, ``"fcn"``, ``"ocr"``, ``"none"``) or None
            to detect it from the keys (:func:`detect_decoder`).

    Returns:
        ``(converted, dropped)``: a new dict with the keys of the matching segctl model
        (``segformer_mit_b*``, ``fcn_hrnetv2_*``, ``ocr_hrnetv2_*``; load it with
        ``strict=True``; ``head="none"`` gives ``backbone.*`` only), and the sorted source keys
        discarded (loss modules). Tensors are shared with the input except the running means
        that absorb a folded conv bias (see the module docstring).

    Raises:
        ValueError: unknown ``head``; keys outside ``encoder.``/``decoder.`` or decoder keys
            that the head's rules do not cover (listed); a folded bias whose BatchNorm running
            mean is missing.
    """
    state = {k.removeprefix("module."): v for k, v in state_dict.items()}
    if head is None:
        head = detect_decoder(list(state))
    if head not in DECODER_RULES:
        raise ValueError(f"head must be one of {HEADS} or None, got {head!r}")
    dropped = sorted(k for k in state if k.startswith(DROPPED_PREFIXES))
    state = {k: v for k, v in state.items() if not k.startswith(DROPPED_PREFIXES)}

    fold_biases_into_running_means(state, FOLDED_BIASES.get(head, ()))

    rules = [(re.compile(pattern), target) for pattern, target in DECODER_RULES[head]]
    converted: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        if key.startswith(ENCODER):
            converted["backbone." + key[len(ENCODER):]] = value
            continue
        for pattern, target in rules:
            if pattern.match(key):
                converted[pattern.sub(target, key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"{len(unknown)} United-Perception keys have no segctl counterpart for "
            f"head={head!r}: " + ", ".join(sorted(unknown)[:20])
            + (" ..." if len(unknown) > 20 else "")
        )
    for key in [k for k in converted if k.endswith(".running_mean")]:
        counter = key[: -len("running_mean")] + "num_batches_tracked"
        converted.setdefault(counter, torch.tensor(0, dtype=torch.long))
    return converted, dropped
