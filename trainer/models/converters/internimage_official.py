"""OpenGVLab InternImage checkpoints -> this project's InternImage names.

Source format: OpenGVLab/InternImage. Segmentation checkpoints
(``segmentation/mmseg_custom``, mmseg 0.x runner) keep ``state_dict`` with ``backbone.*``,
``decode_head.*`` and ``auxiliary_head.*`` keys that already equal this project's names
(:mod:`trainer.models.internimage_zoo`), so they need no renaming. ImageNet classification
checkpoints (``classification/models/intern_image.py``, under ``model``) hold the backbone's
keys without a prefix (``patch_embed.*``, ``levels.*``) plus the classifier, which the
segmentation backbone lacks: ``conv_head.*`` and ``head.*`` (T..XL), and for H the attention
pooling ``clip_projector.*`` and ``fc_norm.*``. Those are dropped.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

# The clip-projector head of the H and G ImageNet files (classification/models/intern_image.py
# use_clip_projector) adds dcnv3_head_x4 and dcnv3_head_x3 beside clip_projector.
CLASSIFIER_PREFIXES = ("conv_head.", "head.", "clip_projector.", "fc_norm.", "avgpool.",
                       "dcnv3_head_x4.", "dcnv3_head_x3.")
BACKBONE_PREFIXES = ("patch_embed.", "levels.")


def is_internimage_classification(keys: list[str]) -> bool:
    """Whether the keys look like an InternImage ImageNet file (``levels.*`` without prefix)."""
    return any(k.removeprefix("module.").startswith("levels.") for k in keys)


def convert_internimage_classification(
    state_dict: Mapping[str, Tensor],
) -> tuple[dict[str, Tensor], list[str]]:
    """Keep the backbone part of an InternImage classification state dict.

    Returns:
        ``(backbone_state, dropped)``: keys relative to the backbone (load into
        ``model.backbone`` with ``strict=True``) and the dropped classifier keys.

    Raises:
        ValueError: keys that are neither backbone nor classifier (listed in the message).
    """
    kept: dict[str, Tensor] = {}
    dropped: list[str] = []
    unknown: list[str] = []
    for source, value in state_dict.items():
        key = source.removeprefix("module.")
        if key.startswith(BACKBONE_PREFIXES):
            kept[key] = value
        elif key.startswith(CLASSIFIER_PREFIXES):
            dropped.append(source)
        else:
            unknown.append(source)
    if unknown:
        raise ValueError(
            f"{len(unknown)} keys are neither InternImage backbone nor classifier keys: "
            + ", ".join(sorted(unknown)[:20])
        )
    return kept, sorted(dropped)
