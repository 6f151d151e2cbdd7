"""Cascade encoder-decoder: decode heads applied in sequence, each refining the previous logits.

Mirrors mmsegmentation 1.x ``mmseg/models/segmentors/cascade_encoder_decoder.py``: the heads
live in ``decode_head`` as an ``nn.ModuleList`` (state-dict prefixes ``decode_head.0.``,
``decode_head.1.``, ...); head 0 maps the backbone features to logits, every later head takes
the features and the previous head's logits (OCRNet: FCN head, then OCR head).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from trainer.models.segmentor import EncoderDecoder


class CascadeEncoderDecoder(EncoderDecoder):
    """``heads[-1](feats, ... heads[1](feats, heads[0](feats)))`` over ``backbone(images)``.

    Args:
        backbone: maps float images (N, 3, H, W) to a list of feature maps.
        decode_heads: at least two heads; ``decode_heads[0](feats)`` and
            ``decode_heads[k](feats, previous_logits)`` for k >= 1, each returning float logits
            (N, num_classes, h, w).
        align_corners: used when :meth:`encode_decode` resizes logits to the image size.
        loss_weights: weight of each output key in the training loss (keys not named weigh
            1.0); mmseg's OCRNet weighs the FCN stage 0.4: ``{"aux": 0.4}``.

    Output keys of :meth:`forward`: ``"decode"`` for the last head; the earlier heads are
    ``"aux"`` when there is one, else ``"aux0"``, ``"aux1"``, ... in order. There are no separate
    auxiliary heads.

    Raises:
        ValueError: fewer than two decode heads.
    """

    def __init__(
        self,
        backbone: nn.Module,
        decode_heads: Sequence[nn.Module],
        align_corners: bool = False,
        loss_weights: Mapping[str, float] | None = None,
    ) -> None:
        if len(decode_heads) < 2:
            raise ValueError(
                f"a cascade needs at least two decode heads, got {len(decode_heads)}; "
                "use EncoderDecoder for one"
            )
        super().__init__(
            backbone,
            nn.ModuleList(decode_heads),
            align_corners=align_corners,
            loss_weights=loss_weights,
        )

    def _stage_logits(self, feats: list[Tensor]) -> list[Tensor]:
        heads = list(self.decode_head)  # type: ignore[arg-type]
        outputs = [heads[0](feats)]
        for head in heads[1:]:
            outputs.append(head(feats, outputs[-1]))
        return outputs

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Logits of every stage at the head's own resolution.

        Args:
            images: float (N, 3, H, W), normalised.

        Returns:
            ``{"decode": (N, num_classes, h, w), "aux": ...}`` (see the class docstring for the
            keys; h = ceil(H / 4) behind HRNet).
        """
        stages = self._stage_logits(self.backbone(images))
        *earlier, last = stages
        outputs = {"decode": last}
        if len(earlier) == 1:
            outputs["aux"] = earlier[0]
        else:
            outputs.update({f"aux{k}": logits for k, logits in enumerate(earlier)})
        return outputs

    def encode_decode(self, images: Tensor) -> Tensor:
        """Last head's logits resized bilinearly to the input size.

        Args:
            images: float (N, 3, H, W), normalised.

        Returns:
            float logits (N, num_classes, H, W).
        """
        logits = self._stage_logits(self.backbone(images))[-1]
        return F.interpolate(
            logits, size=images.shape[2:], mode="bilinear", align_corners=self.align_corners
        )
