"""Encoder-decoder segmentor: a backbone, a decode head and optional auxiliary heads.

Mirrors mmsegmentation 1.x ``mmseg/models/segmentors/encoder_decoder.py`` in its submodule
names (``backbone``, ``decode_head``, ``auxiliary_head``), so mmseg checkpoints load with
``strict=True``. The segmentor owns its training loss (:meth:`EncoderDecoder.training_loss`,
built from :mod:`trainer.models.losses`), so the training loop names no architecture; inference
strategies (sliding window, multi-scale, flip) live in ``trainer/evaluate.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.models.losses import segmentation_loss

#: Averages a tensor over the training processes and returns it (may work in place); may
#: return None to defer: the caller then keeps its state unchanged (gradient accumulation
#: averages the updates of a step's micro-batches first, ``trainer.engine.AccumulatedMean``).
Reduce = Callable[[Tensor], "Tensor | None"]


def mean_over_processes(tensor: Tensor) -> Tensor:
    """The default :data:`Reduce`: all-reduce ``tensor`` in place to its mean over the default
    process group (SUM, then divided by the world size) and return it; the identity in a
    single process (no process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
        tensor /= dist.get_world_size()
    return tensor


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

    def training_loss(
        self,
        images: Tensor,
        labels: Tensor,
        *,
        ignore_index: int,
        ohem: tuple[float, int] | None = None,
        ohem_style: str = "mmseg_sampler",
        lr: float | None = None,
        epoch: int | None = None,
        reduce: Reduce = mean_over_processes,
        forward: Callable[..., dict[str, Tensor]] | None = None,
    ) -> Tensor:
        """The training loss of one batch (mmseg's, as its segmentors compute it).

        Cross-entropy on the decode head plus each auxiliary head at the weight
        :attr:`loss_weights` declares (e.g. 0.4 for the auxiliary FCN head), averaged over all
        pixels (``avg_non_ignore=False``, the mmseg default the published configs ran with),
        each output resized to the label size with :attr:`align_corners` (as mmseg's
        ``BaseDecodeHead.loss_by_feat``). ``ohem`` and ``ohem_style`` select OHEM terms
        (:func:`~trainer.models.losses.segmentation_loss`).

        Args:
            images: float (N, 3, H, W), normalised.
            labels: int64 (N, H, W) class indices or ``ignore_index``.
            ignore_index: label value skipped by the loss.
            ohem: ``(thresh, min_kept)`` or None.
            ohem_style: ``"mmseg_sampler"`` or ``"up_seg_ohem"``.
            lr: the schedule's current base learning rate (before group multipliers); unused
                here, see subclasses.
            epoch: the 1-based epoch of this step; unused here.
            reduce: averages state the model keeps in sync over processes (default
                :func:`mean_over_processes`); unused here.
            forward: runs this module's forward pass; pass the distributed wrapper (e.g. DDP)
                so its gradient hooks run. Default: this module.

        Returns:
            A float scalar tensor.
        """
        outputs = (forward or self)(images)
        loss, _ = segmentation_loss(
            outputs, labels, ignore_index=ignore_index, weights=self.loss_weights,
            avg_non_ignore=False, ohem=ohem, ohem_style=ohem_style,
            align_corners=bool(self.align_corners),
        )
        return loss
