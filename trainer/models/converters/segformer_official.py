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
and the official head is 768 wide for B2..B5. :func:`convert_segformer_official` therefore
returns the encoder only (decoder keys in ``dropped``). The models
``segformer_official_mit_b*`` carry the official head
(:class:`trainer.models.segformer_official_head.SegFormerOfficialHead`, same parameter names):
:func:`convert_segformer_official_segmentor` converts a whole segmentation checkpoint for them,
``decode_head.*`` unchanged except ``decode_head.conv_seg.*`` (built by the official
``BaseDecodeHead`` but never used by its forward), which is dropped.

Numerics: the official code uses LayerNorm eps 1e-5 in the patch embeddings and reduction
norms, this project 1e-6 everywhere (mmseg's choice); the weights are identical.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor

from trainer.models import MIT_VARIANTS

_PATCH = re.compile(r"^patch_embed(\d)\.(proj|norm)\.(.+)$")
_BLOCK = re.compile(r"^block(\d)\.(\d+)\.(.+)$")
_NORM = re.compile(r"^norm(\d)\.(.+)$")
_FFN = {"mlp.fc1.": "ffn.layers.0.", "mlp.dwconv.dwconv.": "ffn.layers.1.", "mlp.fc2.": "ffn.layers.4."}
DECODER_PREFIXES = ("decode_head.", "auxiliary_head.")
CLASSIFIER_PREFIXES = ("head.",)
_OFFICIAL_DECODER = re.compile(
    r"^decode_head\.(linear_c[1-4]\.proj\.(weight|bias)|linear_fuse\.conv\.weight"
    r"|linear_fuse\.bn\.(weight|bias|running_mean|running_var|num_batches_tracked)"
    r"|linear_pred\.(weight|bias))$"
)
_UNUSED_DECODER_PREFIXES = ("decode_head.conv_seg.",)


def is_segformer_official(keys: list[str]) -> bool:
    """Whether the keys (optionally ``backbone.``-prefixed) are NVlabs MiT names."""
    return any(_PATCH.match(k.removeprefix("backbone.")) or _BLOCK.match(k.removeprefix("backbone."))
               for k in keys)


def has_official_decoder(keys: list[str]) -> bool:
    """Whether the keys (optionally ``module.``-prefixed) hold the official SegFormer decoder
    (``decode_head.linear_c{i}`` / ``linear_fuse`` / ``linear_pred``)."""
    return any(k.removeprefix("module.").startswith("decode_head.linear_") for k in keys)


def official_preset(state_dict: Mapping[str, Tensor]) -> str:
    """The model preset that loads this official checkpoint in full, e.g.
    ``"segformer_official_mit_b2"``, read from the encoder's first width and its depths;
    ``"segformer_official_mit_b0 .. b5"`` when they match no MiT variant."""
    keys = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state_dict.items()}
    embed = keys.get("patch_embed1.proj.weight")
    depths = []
    for stage in range(1, 5):
        blocks = {
            int(m.group(2)) for k in keys if (m := _BLOCK.match(k)) and m.group(1) == str(stage)
        }
        depths.append(max(blocks) + 1 if blocks else 0)
    for variant, (width, layers) in MIT_VARIANTS.items():
        if embed is not None and embed.shape[0] == width and tuple(depths) == tuple(layers):
            return f"segformer_official_mit_{variant}"
    return "segformer_official_mit_b0 .. b5"


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


def convert_segformer_official_segmentor(
    state_dict: Mapping[str, Tensor],
) -> tuple[dict[str, Tensor], list[str]]:
    """Convert a whole NVlabs SegFormer segmentation checkpoint for the ``segformer_official_mit_*``
    models (MiT encoder + :class:`~trainer.models.segformer_official_head.SegFormerOfficialHead`).

    The encoder goes through :func:`convert_segformer_official` and gains the ``backbone.``
    prefix; the decoder keeps its official names (``decode_head.linear_c{1..4}.proj.*``,
    ``linear_fuse.conv.weight``, ``linear_fuse.bn.*``, ``linear_pred.*``). Tensors are passed
    through unchanged (same objects, dtypes and shapes). A checkpoint whose ``linear_fuse.bn``
    lacks ``num_batches_tracked`` (written before PyTorch 0.4.1) gets a zero int64 counter, the
    value a fresh BatchNorm holds.

    Args:
        state_dict: official tensors, keys ``backbone.*`` and ``decode_head.*``, optionally
            prefixed ``module.``.

    Returns:
        ``(converted, dropped)``: ``converted`` is the full model's state dict (load into the
        segmentor with ``strict=True``); ``dropped`` lists the source keys without a
        counterpart (``decode_head.conv_seg.*``, unused by the official forward).

    Raises:
        ValueError: no official decoder keys (``decode_head.linear_*``); decoder or auxiliary
            keys the official head does not have (listed); whatever
            :func:`convert_segformer_official` raises for the encoder.
    """
    state = {k.removeprefix("module."): v for k, v in state_dict.items()}
    if not has_official_decoder(list(state)):
        raise ValueError(
            "no official SegFormer decoder keys (decode_head.linear_c*, linear_fuse, linear_pred) "
            "in the checkpoint: it holds an encoder only"
        )
    encoder = {k: v for k, v in state.items() if not k.startswith(DECODER_PREFIXES)}
    backbone, dropped = convert_segformer_official(encoder)
    converted = {f"backbone.{k}": v for k, v in backbone.items()}
    unknown: list[str] = []
    for key, value in state.items():
        if not key.startswith(DECODER_PREFIXES):
            continue
        if _OFFICIAL_DECODER.match(key):
            converted[key] = value
        elif key.startswith(_UNUSED_DECODER_PREFIXES):
            dropped.append(key)
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"{len(unknown)} decoder keys are not the official SegFormer head's: "
            + ", ".join(sorted(unknown)[:20])
        )
    counter = "decode_head.linear_fuse.bn.num_batches_tracked"
    if "decode_head.linear_fuse.bn.running_mean" in converted and counter not in converted:
        converted[counter] = torch.tensor(0, dtype=torch.long)
    return converted, sorted(dropped)
