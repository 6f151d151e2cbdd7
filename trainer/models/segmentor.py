"""Encoder-decoder segmentor: a backbone, a decode head and optional auxiliary heads.

Mirrors mmsegmentation 1.x ``mmseg/models/segmentors/encoder_decoder.py`` in its submodule
names (``backbone``, ``decode_head``, ``auxiliary_head``), so mmseg checkpoints load with
``strict=True``; training losses live in :mod:`trainer.models.losses`, inference strategies
(sliding window, multi-scale, flip) in ``trainer/evaluate.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor, nn


class EncoderDecoder(nn.Module):
    """``decode_head(backbone(images))``, plus auxiliary heads on the same features.

    Args:
        backbone: maps float images (N, 3, H, W) to a list of feature maps.
        decode_head: maps that list to logits (N, num_classes, h, w).
        auxiliary_head: None, one head (state-dict prefix ``auxiliary_head.``, output key
            ``"aux"``) or a sequence of heads (prefixes ``auxiliary_head.{k}.``, output keys
            ``"aux{k}"``), as mmseg names them. Each receives the full feature list.
        align_corners: used when :meth:`encode_decode` resizes logits to the image size.
        loss_weights: weight of each output key in the training loss (keys not named weigh
            1.0), e.g. ``{"aux": 0.4}`` for mmseg's auxiliary FCN head.
    """

    def __init__(
        self,
        backbone: nn.Module,
        decode_head: nn.Module,
        auxiliary_head: nn.Module | Sequence[nn.Module] | None = None,
        align_corners: bool = False,
        loss_weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.loss_weights: dict[str, float] = dict(loss_weights or {})
        self.backbone = backbone
        self.decode_head = decode_head
        if auxiliary_head is not None and not isinstance(auxiliary_head, nn.Module):
            auxiliary_head = nn.ModuleList(auxiliary_head)
        self.auxiliary_head = auxiliary_head
        self.align_corners = align_corners

    def _aux_heads(self) -> list[tuple[str, nn.Module]]:
        if self.auxiliary_head is None:
            return []
        if isinstance(self.auxiliary_head, nn.ModuleList):
            return [(f"aux{k}", head) for k, head in enumerate(self.auxiliary_head)]
        return [("aux", self.auxiliary_head)]

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Logits of every head at the head's own resolution.

        Args:
            images: float (N, 3, H, W), normalised.

        Returns:
            ``{"decode": (N, num_classes, h, w)}`` (h = ceil(H / 4) for SegFormer) plus one
            entry per auxiliary head (see the class docstring for the keys).
        """
        feats = self.backbone(images)
        outputs = {"decode": self.decode_head(feats)}
        for key, head in self._aux_heads():
            outputs[key] = head(feats)
        return outputs

    def encode_decode(self, images: Tensor) -> Tensor:
        """Decode-head logits resized bilinearly to the input size.

        Args:
            images: float (N, 3, H, W), normalised.

        Returns:
            float logits (N, num_classes, H, W). Auxiliary heads are not evaluated.
        """
        logits = self.decode_head(self.backbone(images))
        return F.interpolate(
            logits, size=images.shape[2:], mode="bilinear", align_corners=self.align_corners
        )
