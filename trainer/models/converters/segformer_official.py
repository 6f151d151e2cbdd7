"""Official NVlabs SegFormer checkpoints -> mmseg MiT parameter names.

Source format: NVlabs/SegFormer ``mmseg/models/backbones/mix_transformer.py`` (``MixVisionTransformer``:
``patch_embedN``, ``blockN``, ``normN``) and ``mmseg/models/decode_heads/segformer_head.py``
(``linear_c{1..4}.proj``, ``linear_fuse``, ``linear_pred``). ImageNet files (``mit_b*.pth``)
hold the encoder and a classifier ``head``; segmentation files hold ``backbone.*`` and
``decode_head.*`` under ``state_dict``. Target: :class:`trainer.models.mit.MixVisionTransformer`
(mmsegmentation names, as ``tools/model_converters/mit2mmseg.py`` produces them).

Mapping (stage ``N`` = 1..4, block ``j``):

* ``patch_embedN.proj`` -> ``layers.{N-1}.0.projection``; ``patch_embedN.norm`` ->
  ``layers.{N-1}.0.norm``;
* ``blockN.j.attn.q`` and ``.kv`` -> ``layers.{N-1}.1.j.attn.attn.in_proj_{weight,bias}``
  (``cat([q, kv], dim=0)``: query rows first, then key, then value);
  ``attn.proj`` -> ``attn.attn.out_proj``; ``attn.sr``, ``attn.norm``, ``norm1``, ``norm2``
  unchanged;
* ``blockN.j.mlp.fc1`` / ``mlp.dwconv.dwconv`` / ``mlp.fc2`` -> ``ffn.layers.0`` / ``1`` / ``4``;
  the two linear weights (out, in) become 1x1 conv weights (out, in, 1, 1);
* ``normN`` -> ``layers.{N-1}.2``;
* ``head.*`` (ImageNet classifier): dropped.

The official decoder cannot be mapped onto mmseg's ``SegformerHead``: ``linear_c{i}`` is a
plain linear layer (no BatchNorm, no ReLU) while mmseg's ``convs.{i}`` is conv + BN + ReLU,
and the official head is 768 wide for B2..B5. Its keys are returned in ``dropped`` and a
segmentation checkpoint therefore initialises the encoder only.

Numerics: the official code uses LayerNorm eps 1e-5 in the patch embeddings and reduction
norms, this project 1e-6 everywhere (mmseg's choice); the weights are identical.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor

_PATCH = re.compile(r"^patch_embed(\d)\.(proj|norm)\.(.+)$")
_BLOCK = re.compile(r"^block(\d)\.(\d+)\.(.+)$")
_NORM = re.compile(r"^norm(\d)\.(.+)$")
_FFN = {"mlp.fc1.": "ffn.layers.0.", "mlp.dwconv.dwconv.": "ffn.layers.1.", "mlp.fc2.": "ffn.layers.4."}
DECODER_PREFIXES = ("decode_head.", "auxiliary_head.")
CLASSIFIER_PREFIXES = ("head.",)


def is_segformer_official(keys: list[str]) -> bool:
    """Whether the keys (optionally ``backbone.``-prefixed) are NVlabs MiT names."""
    return any(_PATCH.match(k.removeprefix("backbone.")) or _BLOCK.match(k.removeprefix("backbone."))
               for k in keys)


def _block_key(rest: str, value: Tensor) -> tuple[str, Tensor] | None:
    if rest.startswith("attn.kv."):
        return None  # folded into in_proj together with q
    if rest.startswith("attn.proj."):
        return "attn.attn.out_proj." + rest[len("attn.proj."):], value
    for old, new in _FFN.items():
        if rest.startswith(old):
            if old != "mlp.dwconv.dwconv." and rest.endswith("weight") and value.ndim == 2:
                value = value.reshape(*value.shape, 1, 1)
            return new + rest[len(old):], value
    return rest, value


def convert_segformer_official(
    state_dict: Mapping[str, Tensor],
) -> tuple[dict[str, Tensor], list[str]]:
    """Rename an NVlabs SegFormer/MiT state dict to this project's MiT keys.

    Args:
        state_dict: official tensors; keys optionally prefixed ``module.`` (DataParallel) and
            ``backbone.`` (segmentation checkpoints).

    Returns:
        ``(converted, dropped)``: ``converted`` holds the encoder's keys relative to the
        backbone (load into ``model.backbone`` with ``strict=True``); ``dropped`` lists the
        source keys without a counterpart (classifier ``head.*``, the official decoder).

    Raises:
        ValueError: a ``q`` weight without its ``kv`` (or the reverse), or a key of no known
            kind (listed in the message).
    """
    state = {k.removeprefix("module."): v for k, v in state_dict.items()}
    converted: dict[str, Tensor] = {}
    dropped: list[str] = []
    unknown: list[str] = []
    for source, value in state.items():
        key = source.removeprefix("backbone.")
        if source.startswith(DECODER_PREFIXES) or key.startswith(CLASSIFIER_PREFIXES):
            dropped.append(source)
            continue
        if match := _PATCH.match(key):
            stage, part, rest = match.groups()
            name = "projection" if part == "proj" else "norm"
            converted[f"layers.{int(stage) - 1}.0.{name}.{rest}"] = value
        elif match := _BLOCK.match(key):
            stage, block, rest = match.groups()
            prefix = f"layers.{int(stage) - 1}.1.{block}."
            if rest.startswith("attn.q."):
                kv_key = source.replace("attn.q.", "attn.kv.")
                if kv_key not in state:
                    raise ValueError(f"{source} has no matching {kv_key}")
                suffix = rest[len("attn.q."):]
                converted[prefix + "attn.attn.in_proj_" + suffix] = torch.cat(
                    [value, state[kv_key]], dim=0
                )
                continue
            if rest.startswith("attn.kv.") and source.replace("attn.kv.", "attn.q.") not in state:
                raise ValueError(f"{source} has no matching q weight")
            mapped = _block_key(rest, value)
            if mapped is not None:
                converted[prefix + mapped[0]] = mapped[1]
        elif match := _NORM.match(key):
            stage, rest = match.groups()
            converted[f"layers.{int(stage) - 1}.2.{rest}"] = value
        else:
            unknown.append(source)
    if unknown:
        raise ValueError(
            f"{len(unknown)} keys are not NVlabs SegFormer names: " + ", ".join(sorted(unknown)[:20])
        )
    return converted, sorted(dropped)
