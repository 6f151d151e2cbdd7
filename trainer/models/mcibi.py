"""MCIBI: a dataset-level memory of class representations on top of DeepLabV3.

Method: Jin et al. 2021, "Mining Contextual Information Beyond Image for Semantic
Segmentation" (ICCV 2021, arXiv 2108.11819). Reference implementation: sssegmentation
(SegmentationBLWX/sssegmentation@eb1878c1; the segmentor was ``memorynet`` until 222a73f9)
``ssseg/modules/models/segmentors/mcibi/mcibi.py`` (the segmentor) and ``memory.py``
(``FeaturesMemory``), ``segmentors/base/selfattention.py`` (``SelfAttentionBlock``),
``segmentors/deeplabv3/aspp.py`` (``ASPP``), ``segmentors/base/base.py`` and
``segmentors/base/auxiliary.py`` (auxiliary decoder); settings from
``ssseg/configs/_base_/segmentors/mcibi.py`` and ``ssseg/configs/mcibi/mcibi_deeplabv3_*.py``.

Data flow (one image batch, backbone map ``x`` at 1/8, or 1/16 for ViT):

* ``feats_ms = context_within_image_module(x)`` - ASPP, the within-image context;
* ``memory_input = bottleneck(x)`` - 3x3 conv-BN-act to ``feats_channels`` (512);
* ``stage1 = decoder_stage1(memory_input)`` - a coarse per-pixel classification;
* memory readout: per pixel, the class probabilities softmax(stage1) weight the stored class
  representations (``probs @ memory``); a :class:`SelfAttentionBlock` (query: the pixel
  features, key/value: the read-out map) refines it; ``memory_module.bottleneck`` fuses
  [memory_input, readout]; with the ASPP context on, a second attention (query: memory_input,
  key/value: feats_ms) and ``bottleneck_ms`` fuse the ASPP context in;
* ``stage2 = decoder_stage2(...)`` - the final logits.

Training adds: cross-entropy on ``stage1`` (weight 0.4) and the auxiliary heads (0.4), the memory
update from the ground-truth-masked ``memory_input`` (see :meth:`FeaturesMemory.update`), and,
where the reference config sets ``use_loss`` (ADE20K), a classification loss of the stored
memory through ``decoder_stage2`` from the second epoch on.

Training: :meth:`MCIBISegmentor.training_loss` takes the schedule's current base learning rate
(for the update momentum), the 1-based epoch (the memory loss joins from epoch 2) and the
function that averages the updated memory over processes; it must run on every rank every step.
Evaluation uses ``encode_decode`` and never touches the memory.

Parameter names follow sssegmentation inside the decode head; the segmentor uses this
project's ``backbone``/``decode_head``/``auxiliary_head`` prefixes. The full mapping is in
:func:`convert_sssegmentation_state_dict`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.models.fcn_head import select_inputs
from trainer.models.losses import segmentation_loss
from trainer.models.segmentor import EncoderDecoder, Reduce, mean_over_processes

ACTIVATIONS = ("relu", "leaky_relu")
UPDATE_STRATEGIES = ("cosine_similarity", "mean")
# Pixels processed at once in the memory update (bounds the gathered (P, K, C) memory copy).
_UPDATE_CHUNK = 1 << 16


def build_activation(kind: str) -> nn.Module:
    """ReLU, or LeakyReLU(0.01) as the reference's LIP configs (``act_cfg`` LeakyReLU).

    Raises:
        ValueError: ``kind`` not in :data:`ACTIVATIONS`.
    """
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "leaky_relu":
        return nn.LeakyReLU(0.01, inplace=True)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {kind!r}")


def conv_bn_act(
    in_channels: int, out_channels: int, kernel_size: int = 1, *, stride: int = 1,
    dilation: int = 1, act: str = "relu",
) -> nn.Sequential:
    """``nn.Sequential(conv (no bias), BatchNorm2d, activation)`` - keys ``.0``/``.1`` as the
    reference builds its blocks; padding ``dilation * (kernel_size // 2)``."""
    block = nn.Sequential(
        nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride,
            padding=dilation * (kernel_size // 2), dilation=dilation, bias=False,
        ),
        nn.BatchNorm2d(out_channels),
        build_activation(act),
    )
    nn.init.kaiming_normal_(block[0].weight, mode="fan_out", nonlinearity="relu")
    return block


def classifier(in_channels: int, num_classes: int, dropout: float, act: str) -> nn.Sequential:
    """1x1 conv-BN-act, Dropout2d, 1x1 conv with bias: keys ``.0``, ``.1``, ``.4`` (the
    reference's ``decoder_stage1``/``decoder_stage2``)."""
    block = conv_bn_act(in_channels, in_channels, 1, act=act)
    return nn.Sequential(*block, nn.Dropout2d(dropout), nn.Conv2d(in_channels, num_classes, 1))


class SelfAttentionBlock(nn.Module):
    """Scaled dot-product attention between two feature maps (reference ``SelfAttentionBlock``
    with ``key_query_num_convs=2``, ``value_out_num_convs=1``, norms on, ``matmul_norm`` and an
    output projection, no downsampling, unshared key/query projections).

    ``query_project``/``key_project``: two 1x1 conv-BN-act (keys ``.0.0``, ``.0.1``, ``.1.0``,
    ``.1.1``); ``value_project``/``out_project``: one (keys ``.0``, ``.1``).

    forward(query_feats: float (N, C, H, W), key_feats: float (N, C, H', W')) ->
    float (N, out_channels, H, W): softmax(q k^T / sqrt(transform_channels)) v, projected.
    """

    def __init__(
        self, in_channels: int, transform_channels: int, out_channels: int, act: str = "relu"
    ) -> None:
        super().__init__()

        def project(cin: int, cout: int, num_convs: int) -> nn.Sequential:
            if num_convs == 1:
                return conv_bn_act(cin, cout, act=act)
            return nn.Sequential(
                *(conv_bn_act(cin if i == 0 else cout, cout, act=act) for i in range(num_convs))
            )

        self.transform_channels = transform_channels
        self.key_project = project(in_channels, transform_channels, 2)
        self.query_project = project(in_channels, transform_channels, 2)
        self.value_project = project(in_channels, transform_channels, 1)
        self.out_project = project(transform_channels, out_channels, 1)

    def forward(self, query_feats: Tensor, key_feats: Tensor) -> Tensor:
        n, _, h, w = query_feats.shape
        query = self.query_project(query_feats).flatten(2).transpose(1, 2)  # (N, HW, T)
        key = self.key_project(key_feats).flatten(2)  # (N, T, H'W')
        value = self.value_project(key_feats).flatten(2).transpose(1, 2)  # (N, H'W', T)
        sim = torch.matmul(query, key) * self.transform_channels**-0.5
        context = torch.matmul(F.softmax(sim, dim=-1), value)  # (N, HW, T)
        context = context.transpose(1, 2).reshape(n, -1, h, w)
        return self.out_project(context)


class ASPP(nn.Module):
    """The reference's ASPP module (``segmentors/deeplabv3/aspp.py``), used as MCIBI's
    within-image context: ``parallel_branches.{i}`` (1x1 for dilation 1, else 3x3 dilated,
    conv-BN-act), ``global_branch`` (``.0`` AdaptiveAvgPool2d(1), ``.1``/``.2`` 1x1 conv-BN, act),
    ``bottleneck`` (3x3 conv-BN-act over [branches..., global], in that order - the global
    branch last, unlike mmseg's ``ASPPHead``).

    forward(x: float (N, in_channels, H, W)) -> float (N, out_channels, H, W).
    """

    def __init__(
        self, in_channels: int, out_channels: int, dilations: Sequence[int],
        align_corners: bool = False, act: str = "relu",
    ) -> None:
        super().__init__()
        self.align_corners = align_corners
        self.dilations = tuple(dilations)
        self.parallel_branches = nn.ModuleList(
            conv_bn_act(in_channels, out_channels, 1 if d == 1 else 3, dilation=d, act=act)
            for d in dilations
        )
        self.global_branch = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), *conv_bn_act(in_channels, out_channels, 1, act=act)
        )
        self.bottleneck = conv_bn_act(
            out_channels * (len(dilations) + 1), out_channels, 3, act=act
        )

    def forward(self, x: Tensor) -> Tensor:
        outs = [branch(x) for branch in self.parallel_branches]
        pooled = self.global_branch(x)
        outs.append(
            F.interpolate(pooled, size=x.shape[2:], mode="bilinear",
                          align_corners=self.align_corners)
        )
        return self.bottleneck(torch.cat(outs, dim=1))


class FeaturesMemory(nn.Module):
    """The class memory, its readout and its moving-average update (reference
    ``FeaturesMemory``).

    Buffer ``memory``: float32 (num_classes, num_feats_per_cls, feats_channels), zeros until a
    class is first seen; a buffer (the reference uses a ``requires_grad=False`` parameter of
    the same name and shape), so checkpoints carry it and optimizers ignore it.

    forward(feats: float (N, C, h, w), preds: float logits (N, num_classes, h, w),
    feats_ms: float (N, C, h, w) or None) -> float (N, out_channels, h, w). The readout uses a
    copy of the memory, so a later :meth:`update` does not disturb the backward pass.

    Raises:
        ValueError: (construction) ``num_feats_per_cls`` < 1.
    """

    def __init__(
        self,
        num_classes: int,
        feats_channels: int,
        transform_channels: int,
        out_channels: int,
        *,
        num_feats_per_cls: int = 1,
        use_context_within_image: bool = True,
        use_hard_aggregate: bool = False,
        act: str = "relu",
    ) -> None:
        super().__init__()
        if num_feats_per_cls < 1:
            raise ValueError(f"num_feats_per_cls must be >= 1, got {num_feats_per_cls}")
        self.num_classes = num_classes
        self.feats_channels = feats_channels
        self.num_feats_per_cls = num_feats_per_cls
        self.use_context_within_image = use_context_within_image
        self.use_hard_aggregate = use_hard_aggregate
        self.register_buffer(
            "memory", torch.zeros(num_classes, num_feats_per_cls, feats_channels)
        )
        if num_feats_per_cls > 1:
            self.self_attentions = nn.ModuleList(
                SelfAttentionBlock(feats_channels, transform_channels, feats_channels, act)
                for _ in range(num_feats_per_cls)
            )
            self.fuse_memory_conv = conv_bn_act(
                feats_channels * num_feats_per_cls, feats_channels, 1, act=act
            )
        else:
            self.self_attention = SelfAttentionBlock(
                feats_channels, transform_channels, feats_channels, act
            )
        self.bottleneck = conv_bn_act(feats_channels * 2, out_channels, 3, act=act)
        if use_context_within_image:
            self.self_attention_ms = SelfAttentionBlock(
                feats_channels, transform_channels, feats_channels, act
            )
            self.bottleneck_ms = conv_bn_act(feats_channels * 2, out_channels, 3, act=act)

    def read(self, preds: Tensor) -> list[Tensor]:
        """Per-pixel memory readout: for each slot k, ``softmax(preds) @ memory[:, k]``.

        Args:
            preds: float logits (N, num_classes, h, w).

        Returns:
            ``num_feats_per_cls`` float maps (N, feats_channels, h, w). With
            ``use_hard_aggregate`` the weights are the one-hot argmax instead.
        """
        n, k, h, w = preds.shape
        weights = F.softmax(preds.permute(0, 2, 3, 1).reshape(-1, k), dim=-1)
        if self.use_hard_aggregate:
            weights = F.one_hot(weights.argmax(-1), k).to(weights.dtype)
        memory = self.memory.detach().clone().to(weights.dtype)
        return [
            (weights @ memory[:, slot]).reshape(n, h, w, -1).permute(0, 3, 1, 2).contiguous()
            for slot in range(self.num_feats_per_cls)
        ]

    def forward(self, feats: Tensor, preds: Tensor, feats_ms: Tensor | None = None) -> Tensor:
        readouts = self.read(preds)
        if self.num_feats_per_cls > 1:
            attended = [att(feats, r) for att, r in zip(self.self_attentions, readouts)]
            selected = self.fuse_memory_conv(torch.cat(attended, dim=1))
        else:
            selected = self.self_attention(feats, readouts[0])
        out = self.bottleneck(torch.cat([feats, selected], dim=1))
        if self.use_context_within_image:
            if feats_ms is None:
                raise ValueError("use_context_within_image is on: feats_ms is required")
            context = self.self_attention_ms(feats, feats_ms)
            out = self.bottleneck_ms(torch.cat([context, out], dim=1))
        return out

    @torch.no_grad()
    def update(
        self,
        features: Tensor,
        labels: Tensor,
        momentum: float,
        *,
        ignore_index: int = 255,
        strategy: str = "cosine_similarity",
        align_corners: bool = False,
        reduce: Reduce = mean_over_processes,
    ) -> None:
        """Moving-average update of the memory from ground-truth-masked features.

        For every class c present in ``labels`` (``ignore_index`` and labels outside
        [0, num_classes) are skipped):

        * if one of c's slots is all zeros, the first such slot is set to the mean feature of
          c's pixels and c is not updated further this step (the reference's initialisation);
        * otherwise, with one slot, ``strategy="cosine_similarity"`` combines c's pixel features
          f_i with weights w_i = (1 - s_i) / sum_j (1 - s_j), s_i = cos(f_i, memory[c]), so
          features unlike the stored one count more, and sets
          ``memory[c] = (1 - momentum) * memory[c] + momentum * sum_i w_i f_i``;
          ``strategy="mean"`` uses the plain mean instead of the weighted sum;
        * with several slots (cosine strategy only) each pixel goes to the slot of highest cosine
          similarity and each slot is updated as above from its pixels; a slot that received no
          pixel decays to ``(1 - momentum) * memory`` (as in the reference).

        In the degenerate case where every pixel of a slot has similarity exactly 1 the
        reference divides 0 by 0 (NaN); here that slot is left unchanged.

        The updated memory then goes through ``reduce``, which in distributed training
        averages it over all ranks (``all_reduce`` SUM / world size), as the reference does
        after every update; every rank must therefore call this the same number of times.
        A ``reduce`` that returns None leaves the memory unchanged: with gradient accumulation
        (``train.grad_accum_steps``) the engine's ``trainer.engine.AccumulatedMean`` keeps the
        step's micro-batch updates, each computed from the memory as the step began, and
        returns their mean over micro-batches and ranks at the last micro-batch, the update a
        run with that many times the GPUs makes once per step.

        Args:
            features: float (N, feats_channels, h, w), the ``memory_input`` features; resized
                bilinearly to the label size when the sizes differ (the reference upsamples
                them to the image size).
            labels: int64 (N, H, W) class indices or ``ignore_index``.
            momentum: the moving-average weight of the new features (see
                :meth:`MCIBISegmentor.memory_momentum`).
            ignore_index: label value that is skipped.
            strategy: one of :data:`UPDATE_STRATEGIES`.
            align_corners: for the bilinear resize.
            reduce: averages the updated memory over processes (float32, the memory's shape);
                default :func:`~trainer.models.segmentor.mean_over_processes` (the identity
                in a single process).

        Raises:
            ValueError: unknown ``strategy``, "mean" with several slots, or shapes that do not
                match (batch size, channels, label rank).
        """
        if strategy not in UPDATE_STRATEGIES:
            raise ValueError(f"strategy must be one of {UPDATE_STRATEGIES}, got {strategy!r}")
        num_slots = self.num_feats_per_cls
        if strategy == "mean" and num_slots > 1:
            raise ValueError("strategy 'mean' supports one feature per class only")
        if labels.ndim != 3 or labels.shape[0] != features.shape[0]:
            raise ValueError(
                f"labels must be (N, H, W) matching features {tuple(features.shape)}; "
                f"got {tuple(labels.shape)}"
            )
        if features.shape[1] != self.feats_channels:
            raise ValueError(
                f"features have {features.shape[1]} channels, memory {self.feats_channels}"
            )
        num_classes, channels = self.num_classes, self.feats_channels
        memory = self.memory.float()
        device = memory.device
        class_sum = torch.zeros(num_classes, channels, device=device)
        class_count = torch.zeros(num_classes, device=device)
        slot_num = torch.zeros(num_classes * num_slots, channels, device=device)
        slot_den = torch.zeros(num_classes * num_slots, device=device)
        slot_count = torch.zeros(num_classes * num_slots, device=device)

        for feats_i, labels_i in zip(features, labels):  # one image at a time bounds memory
            feats_i = feats_i.float()
            if feats_i.shape[1:] != labels_i.shape:
                feats_i = F.interpolate(
                    feats_i[None], size=labels_i.shape, mode="bilinear",
                    align_corners=align_corners,
                )[0]
            pixels = feats_i.reshape(channels, -1).t()  # (P, C)
            lab = labels_i.reshape(-1).long()
            valid = (lab != ignore_index) & (lab >= 0) & (lab < num_classes)
            pixels, lab = pixels[valid], lab[valid]
            for start in range(0, lab.numel(), _UPDATE_CHUNK):
                f = pixels[start : start + _UPDATE_CHUNK]
                c = lab[start : start + _UPDATE_CHUNK]
                class_sum.index_add_(0, c, f)
                class_count.index_add_(0, c, torch.ones_like(c, dtype=class_count.dtype))
                if strategy == "mean":
                    continue
                stored = memory[c]  # (p, K, C)
                if num_slots > 1:
                    relation = torch.einsum(
                        "pc,pkc->pk", F.normalize(f, dim=1), F.normalize(stored, dim=2)
                    )
                    slot = relation.argmax(dim=1)
                else:
                    slot = torch.zeros_like(c)
                chosen = stored[torch.arange(c.numel(), device=device), slot]
                weight = 1.0 - F.cosine_similarity(f, chosen, dim=1)
                index = c * num_slots + slot
                slot_num.index_add_(0, index, f * weight[:, None])
                slot_den.index_add_(0, index, weight)
                slot_count.index_add_(0, index, torch.ones_like(weight))

        present = class_count > 0
        empty = (memory == 0).all(dim=2)  # (M, K)
        first_empty = F.one_hot(empty.float().argmax(dim=1), num_slots).bool() & empty
        init_class = present & empty.any(dim=1)
        new_memory = memory.clone()
        # Initialise: first all-zero slot of a present class <- the class mean.
        class_mean = class_sum / class_count.clamp(min=1)[:, None]
        init_slot = first_empty & init_class[:, None]
        new_memory[init_slot] = class_mean[:, None, :].expand_as(memory)[init_slot]
        # Update: every slot of the remaining present classes.
        update_class = present & ~init_class
        if strategy == "mean":
            target = class_mean[:, None, :].expand_as(memory)
            update_slot = update_class[:, None].expand(num_classes, num_slots)
        else:
            den = slot_den.reshape(num_classes, num_slots)
            num = slot_num.reshape(num_classes, num_slots, channels)
            count = slot_count.reshape(num_classes, num_slots)
            target = torch.where(
                (den > 0)[..., None], num / den.clamp(min=1e-30)[..., None], torch.zeros_like(num)
            )
            # Slots that got pixels but zero total weight (all similarities 1) stay unchanged.
            update_slot = update_class[:, None] & ((den > 0) | (count == 0))
        moved = (1.0 - momentum) * memory + momentum * target
        new_memory[update_slot] = moved[update_slot]

        new_memory = reduce(new_memory)
        if new_memory is not None:  # None: deferred to the step's last micro-batch
            self.memory.copy_(new_memory.to(self.memory.dtype))


class MemoryNetHead(nn.Module):
    """MCIBI decode head: within-image ASPP context, memory readout, two-stage classifier.

    Submodules (reference names): ``context_within_image_module`` (:class:`ASPP`, absent when
    ``context_dilations`` is None), ``bottleneck`` (3x3 conv-BN-act in_channels ->
    feats_channels), ``memory_module`` (:class:`FeaturesMemory`), ``decoder_stage1`` (on the
    bottleneck output) and ``decoder_stage2`` (on the memory output), each a
    :func:`classifier`.

    forward(features: list of float maps; the last, (N, in_channels, h, w), is used) ->
    ``(stage1, stage2, memory_input)``: two float logits (N, num_classes, h, w) and the
    bottleneck features float (N, feats_channels, h, w) that :meth:`FeaturesMemory.update`
    consumes.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        feats_channels: int = 512,
        transform_channels: int = 256,
        out_channels: int = 512,
        num_feats_per_cls: int = 1,
        context_dilations: Sequence[int] | None = (1, 12, 24, 36),
        use_hard_aggregate: bool = False,
        dropout: float = 0.1,
        act: str = "relu",
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_channels = in_channels
        if context_dilations is not None:
            self.context_within_image_module = ASPP(
                in_channels, feats_channels, context_dilations, align_corners, act
            )
        self.bottleneck = conv_bn_act(in_channels, feats_channels, 3, act=act)
        self.memory_module = FeaturesMemory(
            num_classes, feats_channels, transform_channels, out_channels,
            num_feats_per_cls=num_feats_per_cls,
            use_context_within_image=context_dilations is not None,
            use_hard_aggregate=use_hard_aggregate, act=act,
        )
        self.decoder_stage1 = classifier(feats_channels, num_classes, dropout, act)
        self.decoder_stage2 = classifier(out_channels, num_classes, dropout, act)
        for decoder in (self.decoder_stage1, self.decoder_stage2):
            nn.init.normal_(decoder[4].weight, 0.0, 0.01)
            nn.init.zeros_(decoder[4].bias)

    def forward(self, features: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        x = features[-1]
        feats_ms = (
            self.context_within_image_module(x)
            if hasattr(self, "context_within_image_module") else None
        )
        memory_input = self.bottleneck(x)
        stage1 = self.decoder_stage1(memory_input)
        memory_output = self.memory_module(memory_input, stage1, feats_ms)
        return stage1, self.decoder_stage2(memory_output), memory_input

    def memory_logits(self) -> Tensor:
        """The stored memory classified by ``decoder_stage2``: float
        (num_classes * num_feats_per_cls, num_classes), row r belonging to class
        r // num_feats_per_cls (reference ``calculatememoryloss``). Gradients reach
        ``decoder_stage2`` only; in training mode its BatchNorm sees the memory as a batch."""
        memory = self.memory_module.memory.detach().clone()
        rows = memory.reshape(-1, memory.shape[-1], 1, 1)
        return self.decoder_stage2(rows).flatten(1)


class UpsampleAuxHead(nn.Sequential):
    """The reference's auxiliary decoder with ``upsample`` (MCIBI ViT-L configs): for each of
    ``num_convs`` blocks a 3x3 conv-BN-act followed by ``nn.Upsample(scale_factor)`` (nearest),
    then Dropout2d and a 1x1 classifier with bias. Keys ``{j}`` as the reference's
    ``auxiliary_decoder.{k}.{j}``.

    forward(features: list of float maps) -> float logits (N, num_classes,
    h * scale^num_convs, w * scale^num_convs) from ``features[in_index]``.
    """

    def __init__(
        self, in_channels: int, channels: int, num_classes: int, *, in_index: int,
        num_convs: int = 2, scale_factor: int = 4, dropout: float = 0.1, act: str = "relu",
    ) -> None:
        layers: list[nn.Module] = []
        for i in range(num_convs):
            layers += [*conv_bn_act(in_channels if i == 0 else channels, channels, 3, act=act),
                       nn.Upsample(scale_factor=scale_factor)]
        layers += [nn.Dropout2d(dropout), nn.Conv2d(channels, num_classes, 1)]
        super().__init__(*layers)
        self.in_index = in_index

    def forward(self, features: Sequence[Tensor]) -> Tensor:  # type: ignore[override]
        x = features[self.in_index]
        for layer in self:
            x = layer(x)
        return x


class MCIBISegmentor(EncoderDecoder):
    """DeepLabV3 + MCIBI segmentor (reference ``MemoryNet``).

    Args:
        backbone: images -> list of feature maps.
        decode_head: a :class:`MemoryNetHead`.
        auxiliary_head: as :class:`EncoderDecoder` (heads receive the transformed features).
        align_corners: for every bilinear resize.
        loss_weights: per per-pixel output key, e.g. ``{"stage1": 0.4, "aux": 0.4}`` (passed
            to ``segmentation_loss``; ``"memory"`` is not a pixel output and is weighted by
            ``memory_loss_weight`` instead).
        concat_inputs: resize all backbone maps to the first one's size and concatenate them
            into a single map first (HRNetV2, whose reference backbone does this itself).
        downsample_channels: when set, ``downsample_backbone`` (3x3 stride-2 conv-BN-act on
            that many channels) is applied to every map (reference HRNet Cityscapes/LIP).
        base_momentum, momentum_base_lr, adjust_momentum_by_lr: the update momentum, see
            :meth:`memory_momentum`.
        update_strategy: see :meth:`FeaturesMemory.update`.
        use_memory_loss: emit ``"memory"`` logits from the second epoch on (reference
            ``use_loss``).
        ignore_index: label value skipped by the memory update.
        act: activation of ``downsample_backbone``.
        memory_loss_weight: weight of :func:`memory_classification_loss` (reference 1.0).

    Outputs of :meth:`forward` (dict of float tensors):
        ``"decode"``: stage-2 logits (N, num_classes, h, w) (h = H/8; H/16 for ViT);
        ``"stage1"``: stage-1 logits, same shape;
        ``"aux"`` / ``"aux{k}"``: auxiliary logits;
        ``"memory"`` (training, labels given, ``use_memory_loss`` and ``epoch`` > 1 only):
        (num_classes * num_feats_per_cls, num_classes) logits of the stored memory, for
        :func:`memory_classification_loss` - not a per-pixel output.
    """

    def __init__(
        self,
        backbone: nn.Module,
        decode_head: MemoryNetHead,
        auxiliary_head: nn.Module | Sequence[nn.Module] | None = None,
        align_corners: bool = False,
        loss_weights: Mapping[str, float] | None = None,
        *,
        concat_inputs: bool = False,
        downsample_channels: int | None = None,
        base_momentum: float = 0.9,
        momentum_base_lr: float = 0.01,
        adjust_momentum_by_lr: bool = True,
        update_strategy: str = "cosine_similarity",
        use_memory_loss: bool = True,
        ignore_index: int = 255,
        act: str = "relu",
        memory_loss_weight: float = 1.0,
    ) -> None:
        super().__init__(backbone, decode_head, auxiliary_head, align_corners, loss_weights)
        if update_strategy not in UPDATE_STRATEGIES:
            raise ValueError(
                f"update_strategy must be one of {UPDATE_STRATEGIES}, got {update_strategy!r}"
            )
        self.concat_inputs = concat_inputs
        if downsample_channels is not None:
            self.downsample_backbone = conv_bn_act(
                downsample_channels, downsample_channels, 3, stride=2, act=act
            )
        self.base_momentum = base_momentum
        self.momentum_base_lr = momentum_base_lr
        self.adjust_momentum_by_lr = adjust_momentum_by_lr
        self.update_strategy = update_strategy
        self.use_memory_loss = use_memory_loss
        self.memory_loss_weight = memory_loss_weight
        self.ignore_index = ignore_index

    def extract_features(self, images: Tensor) -> list[Tensor]:
        """Backbone maps after the optional concatenation and downsampling."""
        feats = list(self.backbone(images))
        if self.concat_inputs:
            feats = [select_inputs(feats, tuple(range(len(feats))), "resize_concat",
                                   self.align_corners)]
        if hasattr(self, "downsample_backbone"):
            feats = [self.downsample_backbone(f) for f in feats]
        return feats

    def memory_momentum(self, lr: float | None) -> float:
        """Update momentum: ``base_momentum * lr / momentum_base_lr`` with
        ``adjust_momentum_by_lr`` (the reference's rule: it follows the poly learning-rate decay),
        else ``base_momentum``.

        Args:
            lr: the current (unscaled, base) learning rate of the schedule.

        Raises:
            ValueError: ``lr`` is None while ``adjust_momentum_by_lr`` is on.
        """
        if not self.adjust_momentum_by_lr:
            return self.base_momentum
        if lr is None:
            raise ValueError("the MCIBI memory update needs the current learning rate (lr=...)")
        return self.base_momentum / self.momentum_base_lr * lr

    def update_memory(self, features: Tensor, labels: Tensor, lr: float | None,
                      reduce: Reduce = mean_over_processes) -> None:
        """Run :meth:`FeaturesMemory.update` on ``features`` (the head's ``memory_input``,
        float (N, feats_channels, h, w)) and int64 ``labels`` (N, H, W) with the momentum for
        ``lr``, averaging the result over processes with ``reduce``. A no-op in eval mode."""
        if not self.training:
            return
        self.decode_head.memory_module.update(
            features.detach(), labels, self.memory_momentum(lr),
            ignore_index=self.ignore_index, strategy=self.update_strategy,
            align_corners=self.align_corners, reduce=reduce,
        )

    def forward(
        self,
        images: Tensor,
        labels: Tensor | None = None,
        *,
        lr: float | None = None,
        epoch: int | None = None,
        reduce: Reduce = mean_over_processes,
    ) -> dict[str, Tensor]:
        """Logits of every head; in training mode with ``labels``, also the memory update.

        Args:
            images: float (N, 3, H, W), normalised.
            labels: int64 (N, H, W) ground truth; required for the memory update, which runs
                after the logits are computed (so this step's readout uses the memory before
                it), in training mode only.
            lr: current base learning rate (for the momentum), required with ``labels`` in
                training mode when ``adjust_momentum_by_lr``.
            epoch: current 1-based epoch; the ``"memory"`` output is produced when
                ``use_memory_loss`` and ``epoch`` > 1.
            reduce: averages the updated memory over processes (see
                :meth:`FeaturesMemory.update`).

        Returns:
            See the class docstring.

        Raises:
            ValueError: training with ``labels`` but without ``lr`` (see
                :meth:`memory_momentum`), or labels of the wrong shape.
        """
        feats = self.extract_features(images)
        stage1, stage2, memory_input = self.decode_head(feats)
        outputs = {"decode": stage2, "stage1": stage1}
        for key, head in self._aux_heads():
            outputs[key] = head(feats)
        if self.training and labels is not None:
            self.update_memory(memory_input, labels, lr, reduce)
            if self.use_memory_loss and epoch is not None and epoch > 1:
                outputs["memory"] = self.decode_head.memory_logits()
        return outputs

    def encode_decode(self, images: Tensor) -> Tensor:
        """Stage-2 logits resized bilinearly to the input size: float (N, num_classes, H, W).
        Never updates the memory."""
        _, logits, _ = self.decode_head(self.extract_features(images))
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
        """The reference's training loss, updating the memory on the way.

        The forward pass runs with the labels, ``lr`` and ``epoch``, so it updates the memory
        (averaged over processes by ``reduce``); the cross-entropy of every per-pixel output
        then averages over non-ignored pixels (``avg_non_ignore=True``, as the reference), and
        from epoch 2 (with ``use_memory_loss``) :func:`memory_classification_loss` is added at
        :attr:`memory_loss_weight`. Arguments as :meth:`EncoderDecoder.training_loss`; ``lr``
        (the base learning rate, before group multipliers such as ViT-L's backbone 0.1) is
        required with ``adjust_momentum_by_lr``.

        With gradient accumulation (``train.grad_accum_steps`` N > 1) the memory update is
        deferred to the step's last micro-batch (see :meth:`FeaturesMemory.update`), so the
        memory loss of the first N - 1 micro-batches reads the memory as the step began, the
        last one's the updated memory; a run on N times the GPUs reads the updated memory on
        every GPU. That lag of one step, for (N - 1) / N of the memory loss's gradient (which
        reaches ``decoder_stage2`` only), is the one difference from such a run.

        Raises:
            ValueError: ``lr`` is None while ``adjust_momentum_by_lr`` is on.
        """
        outputs = (forward or self)(images, labels, lr=lr, epoch=epoch, reduce=reduce)
        memory_logits = outputs.pop("memory", None)
        loss, _ = segmentation_loss(
            outputs, labels, ignore_index=ignore_index, weights=self.loss_weights,
            avg_non_ignore=True, ohem=ohem, ohem_style=ohem_style,
            align_corners=bool(self.align_corners),
        )
        if memory_logits is not None:
            loss = loss + self.memory_loss_weight * memory_classification_loss(
                memory_logits, self.decode_head.memory_module.num_feats_per_cls
            )
        return loss


def memory_classification_loss(memory_logits: Tensor, num_feats_per_cls: int = 1) -> Tensor:
    """Cross-entropy of the memory's rows against their own classes (reference
    ``calculatememoryloss``; mean over rows).

    Args:
        memory_logits: float (num_classes * num_feats_per_cls, num_classes), from
            :meth:`MemoryNetHead.memory_logits` (the ``"memory"`` output).
        num_feats_per_cls: slots per class.

    Returns:
        A float scalar tensor.
    """
    rows, num_classes = memory_logits.shape
    target = torch.arange(num_classes, device=memory_logits.device).repeat_interleave(
        num_feats_per_cls
    )
    if target.numel() != rows:
        raise ValueError(
            f"{rows} memory rows do not match {num_classes} classes x {num_feats_per_cls} slots"
        )
    return F.cross_entropy(memory_logits.float(), target)


# sssegmentation key prefix -> this project's key prefix.
_SSSEG_PREFIXES = (
    ("backbone_net.norm_layers.", "backbone.norm_layers."),
    ("norm_layers.", "backbone.norm_layers."),
    ("backbone_net.", "backbone."),
    ("context_within_image_module.", "decode_head.context_within_image_module."),
    ("bottleneck.", "decode_head.bottleneck."),
    ("memory_module.", "decode_head.memory_module."),
    ("decoder_stage1.", "decode_head.decoder_stage1."),
    ("decoder_stage2.", "decode_head.decoder_stage2."),
    ("downsample_backbone.", "downsample_backbone."),
)
# Reference single auxiliary decoder (conv 0, BN 1, act 2, dropout 3, classifier 4) -> FCNHead.
_SSSEG_AUX_FCN = (("0.", "convs.0.conv."), ("1.", "convs.0.bn."), ("4.", "conv_seg."))


def convert_sssegmentation_state_dict(
    state: Mapping[str, Tensor], *, multiple_aux: bool = False
) -> dict[str, Tensor]:
    """Map an sssegmentation MemoryNet state dict onto :class:`MCIBISegmentor` keys.

    Mapping (reference -> here):

    * ``norm_layers.{i}`` (ViT per-tap LayerNorms) -> ``backbone.norm_layers.{i}``;
    * ``backbone_net.*`` -> ``backbone.*`` (the reference's ResNet-with-stem and ViT keys equal
      mmseg's; its ResNeSt and HRNet keys may need the backbone's own converter);
    * ``context_within_image_module``, ``bottleneck``, ``memory_module`` (including
      ``memory_module.memory``), ``decoder_stage1``, ``decoder_stage2`` -> the same names under
      ``decode_head.``; ``downsample_backbone`` unchanged;
    * one ``auxiliary_decoder.{0,1,4}`` -> ``auxiliary_head.{convs.0.conv, convs.0.bn,
      conv_seg}`` (:class:`~trainer.models.fcn_head.FCNHead`); with ``multiple_aux``,
      ``auxiliary_decoder.{k}.{j}`` -> ``auxiliary_head.{k}.{j}`` (:class:`UpsampleAuxHead`).
    """
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        new = None
        if key.startswith("auxiliary_decoder."):
            rest = key[len("auxiliary_decoder."):]
            if multiple_aux:
                new = "auxiliary_head." + rest
            else:
                for old, repl in _SSSEG_AUX_FCN:
                    if rest.startswith(old):
                        new = "auxiliary_head." + repl + rest[len(old):]
                        break
        else:
            for old, repl in _SSSEG_PREFIXES:
                if key.startswith(old):
                    new = repl + key[len(old):]
                    break
        out[new if new is not None else key] = value
    return out


__all__ = [
    "ACTIVATIONS",
    "ASPP",
    "FeaturesMemory",
    "MCIBISegmentor",
    "MemoryNetHead",
    "SelfAttentionBlock",
    "UPDATE_STRATEGIES",
    "UpsampleAuxHead",
    "build_activation",
    "conv_bn_act",
    "convert_sssegmentation_state_dict",
    "memory_classification_loss",
]
