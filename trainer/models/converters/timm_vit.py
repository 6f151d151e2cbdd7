"""timm / JAX ViT ImageNet checkpoints -> :class:`trainer.models.vit.VisionTransformer` names.

Source format: huggingface/pytorch-image-models@736f209e ``timm/models/vision_transformer.py``
(the commit that published ``jx_vit_*_p16_384`` under the ``v0.1-vitjx`` release):
``VisionTransformer`` holds ``cls_token`` (1, 1, C), ``pos_embed`` (1, 1 + (img / patch)^2, C)
(577 entries for ViT-L/16 at 384: a 24 x 24 grid), ``patch_embed.proj``,
``blocks.{i}.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``, a final ``norm`` and
the classifier ``head`` (Linear(C, 1000)). The files are bare state dicts.

Mapping: :func:`trainer.models.vit.convert_timm_vit` (the renaming of sssegmentation's
``VisionTransformer.vitconvert``, SegmentationBLWX/sssegmentation@eb1878c1
``ssseg/modules/models/backbones/vit.py``, and of mmseg's ``tools/model_converters/vit2mmseg.py``),
with ``pos_embed`` resized from its square grid to the target's ``pos_grid`` with the target's
``interpolate_mode`` (class-token entry kept), as both references do when they load the file
(sssegmentation ``loadpretrainedweights``/``resizeposembed``, bilinear in its MCIBI ViT-L
configs; mmseg ``VisionTransformer.init_weights``/``resize_pos_embed``, bicubic by default).

Dropped (:data:`CLASSIFIER_PREFIXES`): the classifier ``head.*`` (both references skip it) and
``pre_logits.*`` (the representation layer of timm's ImageNet-21k files, which timm's own
``checkpoint_filter_fn`` also discards when the model has none); and the final ``norm.*``
(``ln1.*`` after renaming) when the target has no final norm (``final_norm=False``, as
sssegmentation's MCIBI ViT-L: its non-strict load leaves it out).

Target-only keys (:data:`TARGET_ONLY_PREFIXES`): ``norm_layers.*``, the per-tap LayerNorms this
project keeps in the backbone while sssegmentation builds them in the segmentor
(``ssseg/modules/models/segmentors/mcibi/mcibi.py``, ``self.norm_layers``), so no ImageNet file
holds them and both codebases start them from their initialisation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor, nn

from trainer.models.vit import VisionTransformer, convert_timm_vit

CLASSIFIER_PREFIXES = ("head.", "pre_logits.")
FINAL_NORM_PREFIX = "norm."
TARGET_ONLY_PREFIXES = ("norm_layers.",)
_QKV = re.compile(r"^blocks\.\d+\.attn\.qkv\.weight$")


def is_timm_vit(keys: list[str]) -> bool:
    """Whether the keys (optionally ``module.``-prefixed) are timm ViT names
    (``blocks.{i}.attn.qkv.weight``)."""
    return any(_QKV.match(k.removeprefix("module.")) for k in keys)


def convert_timm_vit_backbone(
    state_dict: Mapping[str, Tensor], backbone: nn.Module
) -> tuple[dict[str, Tensor], list[str]]:
    """The backbone part of a timm ViT state dict, renamed for ``backbone``.

    Args:
        state_dict: timm tensors (float; ``pos_embed`` on any square grid), keys optionally
            ``module.``-prefixed.
        backbone: the :class:`~trainer.models.vit.VisionTransformer` to fill (any device,
            meta included: only its ``pos_grid``, ``interpolate_mode``, ``final_norm`` and key
            names are read).

    Returns:
        ``(backbone_state, dropped)``: keys of ``backbone`` (all of them except
        :data:`TARGET_ONLY_PREFIXES`; ``pos_embed`` resized to ``backbone.pos_grid``) and the
        source keys left out (classifier, and the final norm where the target has none).

    Raises:
        ValueError: ``backbone`` is not a ViT; keys that are neither backbone nor dropped
            (listed in the message).
    """
    if not isinstance(backbone, VisionTransformer):
        raise ValueError(
            "a timm ViT checkpoint fits a VisionTransformer backbone, not "
            f"{type(backbone).__name__}"
        )
    state = {k.removeprefix("module."): v for k, v in state_dict.items()}
    dropped = [k for k in state if k.startswith(CLASSIFIER_PREFIXES)]
    if not backbone.final_norm:
        dropped += [k for k in state if k.startswith(FINAL_NORM_PREFIX)]
    kept = {k: v for k, v in state.items() if k not in set(dropped)}
    converted = convert_timm_vit(kept, backbone)
    own = backbone.state_dict()
    unknown = sorted(k for k in converted if k not in own)
    if unknown:
        raise ValueError(
            f"{len(unknown)} keys of the timm ViT checkpoint have no place in the backbone after "
            "renaming: " + ", ".join(unknown[:20]) + (" ..." if len(unknown) > 20 else "")
        )
    return converted, sorted(dropped)
