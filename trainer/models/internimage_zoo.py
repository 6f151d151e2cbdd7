"""UperNet + InternImage-T/S/B/L/XL/H segmentors, named like the reference ADE20K configs.

Each builder reproduces OpenGVLab/InternImage
``segmentation/configs/ade20k/upernet_internimage_{t,s,b,l,xl,h}_*_160k_ade20k.py``: the
InternImage backbone (:data:`~trainer.models.internimage.INTERNIMAGE_SPECS`), a
:class:`~trainer.models.uper_head.UPerHead` (channels 512, pool scales 1/2/3/6, dropout 0.1)
over the four levels, and mmseg's auxiliary :class:`~trainer.models.fcn_head.FCNHead` on level
2 (channels 256, one conv, no concat, dropout 0.1, loss weight 0.4). Parameter names match the
released segmentation checkpoints (``backbone.*``, ``decode_head.*``, ``auxiliary_head.*``).
Builders only allocate modules (they work under ``with torch.device("meta"):``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from trainer.models.fcn_head import FCNHead
from trainer.models.internimage import INTERNIMAGE_SPECS, InternImage
from trainer.models.segmentor import EncoderDecoder
from trainer.models.uper_head import UPerHead

AUX_LOSS_WEIGHT = 0.4


def build_upernet_internimage(
    variant: str,
    num_classes: int,
    *,
    drop_path_rate: float | None = None,
    with_cp: bool = False,
    dropout_ratio: float = 0.1,
    align_corners: bool = False,
) -> EncoderDecoder:
    """UperNet + InternImage-``variant`` with the auxiliary FCN head.

    Args:
        variant: a key of ``INTERNIMAGE_SPECS`` ("t", "s", "b", "l", "xl", "h").
        num_classes: classes of both heads.
        drop_path_rate: backbone stochastic depth; None keeps the variant's (0.2 .. 0.5).
        with_cp: activation checkpointing in the backbone blocks.
        dropout_ratio: Dropout2d before both classifiers.
        align_corners: for every bilinear resize in the heads and the segmentor.

    Returns:
        An :class:`EncoderDecoder` whose ``forward`` gives ``"decode"`` (1/4 resolution) and
        ``"aux"`` (1/16) logits, with ``loss_weights == {"aux": 0.4}``.

    Raises:
        KeyError: unknown ``variant``.
    """
    spec = INTERNIMAGE_SPECS[variant]
    backbone = InternImage.from_spec(spec, drop_path_rate=drop_path_rate, with_cp=with_cp)
    decode_head = UPerHead(
        backbone.out_channels,
        512,
        num_classes,
        pool_scales=(1, 2, 3, 6),
        dropout_ratio=dropout_ratio,
        align_corners=align_corners,
    )
    auxiliary_head = FCNHead(
        backbone.out_channels[2],
        256,
        num_classes,
        num_convs=1,
        kernel_size=3,
        concat_input=False,
        in_index=2,
        dropout_ratio=dropout_ratio,
        align_corners=align_corners,
    )
    return EncoderDecoder(
        backbone,
        decode_head,
        auxiliary_head,
        align_corners=align_corners,
        loss_weights={"aux": AUX_LOSS_WEIGHT},
    )


BUILDERS: dict[str, Callable[..., EncoderDecoder]] = {
    f"upernet_internimage_{variant}": partial(build_upernet_internimage, variant)
    for variant in INTERNIMAGE_SPECS
}
