"""Segmentation models and the explicit name -> builder table.

Every builder takes ``num_classes`` plus keyword options and returns an
:class:`~trainer.models.segmentor.EncoderDecoder` whose parameter names follow the public
mmsegmentation 1.x checkpoints. Builders only allocate modules, so they work under
``with torch.device("meta"):`` (to count parameters without memory).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from trainer.models import deeplab_zoo, hrnet_zoo, internimage_zoo
from trainer.models.mit import MixVisionTransformer
from trainer.models.segformer_head import SegformerHead
from trainer.models.segformer_official_head import SegFormerOfficialHead
from trainer.models.segmentor import EncoderDecoder

# MiT variants (Xie et al. 2021, Table 6; mmseg configs/segformer): base width, blocks per stage.
MIT_VARIANTS: dict[str, tuple[int, tuple[int, int, int, int]]] = {
    "b0": (32, (2, 2, 2, 2)),
    "b1": (64, (2, 2, 2, 2)),
    "b2": (64, (3, 4, 6, 3)),
    "b3": (64, (3, 4, 18, 3)),
    "b4": (64, (3, 8, 27, 3)),
    "b5": (64, (3, 6, 40, 3)),
}

# Decoder width of the official NVlabs configs (local_configs/segformer/B*/*.py,
# ``decoder_params.embed_dim``).
OFFICIAL_DECODER_CHANNELS: dict[str, int] = {
    "b0": 256, "b1": 256, "b2": 768, "b3": 768, "b4": 768, "b5": 768,
}


def build_segformer(
    variant: str,
    num_classes: int,
    *,
    drop_path_rate: float = 0.1,
    dropout_ratio: float = 0.1,
    decoder_channels: int = 256,
    align_corners: bool = False,
) -> EncoderDecoder:
    """SegFormer: MiT-``variant`` encoder + all-MLP head (mmseg ``configs/segformer``).

    Args:
        variant: one of ``MIT_VARIANTS`` ("b0" .. "b5").
        num_classes: number of output classes.
        drop_path_rate: stochastic depth of the last encoder block.
        dropout_ratio: Dropout2d before the classifier.
        decoder_channels: head width; mmseg uses 256 for every variant (the official code 768
            for B2..B5, with another head: :func:`build_segformer_official`).
        align_corners: for every bilinear resize in the head and the segmentor.

    Raises:
        KeyError: unknown ``variant``.
    """
    embed_dims, num_layers = MIT_VARIANTS[variant]
    backbone = MixVisionTransformer(
        embed_dims=embed_dims, num_layers=num_layers, drop_path_rate=drop_path_rate
    )
    head = SegformerHead(
        in_channels=backbone.out_channels,
        channels=decoder_channels,
        num_classes=num_classes,
        dropout_ratio=dropout_ratio,
        align_corners=align_corners,
    )
    return EncoderDecoder(backbone, head, align_corners=align_corners)


def build_segformer_official(
    variant: str,
    num_classes: int,
    *,
    drop_path_rate: float = 0.1,
    dropout_ratio: float = 0.1,
    decoder_channels: int | None = None,
) -> EncoderDecoder:
    """SegFormer as the official NVlabs code builds it: MiT-``variant`` encoder with NVlabs
    LayerNorm eps (1e-5 in the patch embeddings and reduction norms) and
    :class:`SegFormerOfficialHead`, so the official segmentation checkpoints load in full
    (``trainer.models.converters.segformer_official.convert_segformer_official_segmentor``)
    and evaluate with the official numerics. Every resize uses ``align_corners=False``.

    Args:
        variant: one of ``MIT_VARIANTS`` ("b0" .. "b5").
        num_classes: number of output classes.
        drop_path_rate: stochastic depth of the last encoder block.
        dropout_ratio: Dropout2d before ``linear_pred``.
        decoder_channels: head width; default :data:`OFFICIAL_DECODER_CHANNELS` (256 for B0/B1,
            768 for B2..B5).

    Raises:
        KeyError: unknown ``variant``.
    """
    embed_dims, num_layers = MIT_VARIANTS[variant]
    backbone = MixVisionTransformer(
        embed_dims=embed_dims,
        num_layers=num_layers,
        drop_path_rate=drop_path_rate,
        patch_and_sr_norm_eps=1e-5,
    )
    head = SegFormerOfficialHead(
        in_channels=backbone.out_channels,
        channels=(
            OFFICIAL_DECODER_CHANNELS[variant] if decoder_channels is None else decoder_channels
        ),
        num_classes=num_classes,
        dropout_ratio=dropout_ratio,
    )
    return EncoderDecoder(backbone, head, align_corners=False)


MODEL_BUILDERS: dict[str, Callable[..., EncoderDecoder]] = {
    **{f"segformer_mit_{v}": partial(build_segformer, v) for v in MIT_VARIANTS},
    **{f"segformer_official_mit_{v}": partial(build_segformer_official, v) for v in MIT_VARIANTS},
    **hrnet_zoo.BUILDERS,
    **deeplab_zoo.BUILDERS,
    **internimage_zoo.BUILDERS,
}


def build_segmentor(name: str, num_classes: int, **kwargs) -> EncoderDecoder:
    """Build the segmentor registered as ``name`` in :data:`MODEL_BUILDERS`.

    Args:
        name: e.g. ``"segformer_mit_b0"``.
        num_classes: number of output classes.
        **kwargs: options of that builder (e.g. ``drop_path_rate`` for SegFormer).

    Raises:
        KeyError: unknown ``name``; the message lists the known names.
        TypeError: an option the builder does not take.
    """
    try:
        builder = MODEL_BUILDERS[name]
    except KeyError:
        known = ", ".join(sorted(MODEL_BUILDERS))
        raise KeyError(f"unknown model {name!r}; known models: {known}") from None
    return builder(num_classes=num_classes, **kwargs)


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements of ``module`` (works on the meta device)."""
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "MIT_VARIANTS",
    "MODEL_BUILDERS",
    "OFFICIAL_DECODER_CHANNELS",
    "EncoderDecoder",
    "MixVisionTransformer",
    "SegFormerOfficialHead",
    "SegformerHead",
    "build_segformer",
    "build_segformer_official",
    "build_segmentor",
    "count_parameters",
]
