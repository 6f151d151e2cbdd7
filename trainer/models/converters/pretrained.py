"""One entry for pretrained weights: :func:`load_pretrained` (``model.init_checkpoint`` and
``segctl eval --checkpoint``).

Formats (``kind``), detected from the keys with ``kind="auto"``:

* ``"mmseg"``: mmsegmentation 1.x and 0.x segmentor checkpoints, ``{"meta", "state_dict",
  ...}`` (``meta.mmseg_version`` is reported when present), or a bare state dict with
  ``backbone.*``/``decode_head.*`` keys; also this project's ``final.pt`` and ``iter_*.pt``
  (``model`` entry; an ``ema`` entry wins, being the weights training evaluated). The models
  built here (MiT/SegFormer head, HRNetV2 with FCN/OCR heads, ResNet/ResNeSt with ASPP/FCN
  heads, InternImage/ViT with UperNet) use the same parameter names in mmseg 0.x (0.13+) and
  1.x, whose SegFormer names are those ``tools/model_converters/mit2mmseg.py`` writes in both
  series, so no renaming is applied between the two.
* ``"segformer_official"``: NVlabs SegFormer (:mod:`.segformer_official`). A segmentation file
  (official decoder ``decode_head.linear_*``) loads in full, strictly, into a model with the
  official head (presets ``segformer_official_mit_b*``); into any other model (mmseg's head)
  only its encoder loads, with a warning naming the preset, or, with ``require_full``, it is
  an error naming the preset. ImageNet files (``mit_b*.pth``) load into the backbone.
* ``"hrnet_official"``: HRNet-Semantic-Segmentation (:mod:`.hrnet_official`), and HRNet
  ImageNet classification files (official HRNet-Image-Classification names with the head
  ``incre_modules``/``downsamp_modules``/``final_layer``/``classifier``: OpenMMLab's
  ``pretrain/third_party/hrnetv2_w*`` copies, the SSLD files, timm's ``hrnet_w18_small_v1``;
  backbone only, head dropped, :mod:`.hrnet_imagenet`).
* ``"timm_vit"``: timm/JAX ViT ImageNet files (``blocks.{i}.attn.qkv``; :mod:`.timm_vit`):
  renamed with :func:`trainer.models.vit.convert_timm_vit`, ``pos_embed`` resized to the
  backbone's grid with its ``interpolate_mode``, ``head.*`` and (without a final norm in the
  target) ``norm.*`` dropped; backbone only.
* ``"united_perception"``: ModelTC/United-Perception segmentation checkpoints (keys
  ``encoder.*``/``decoder.*``; SegFormer, HRNet FCN and OCR heads; :mod:`.united_perception`).
  Their ``ema["ema_state_dict"]`` entry wins over ``model``/``state_dict``, as UP evaluates
  with the EMA weights; an encoder-only file loads into the backbone.
* ``"internimage"``: InternImage segmentation checkpoints (keys already ``backbone.``-prefixed
  as ours: handled as ``"mmseg"``) and ImageNet classification checkpoints (backbone only,
  :mod:`.internimage_official`).
* ``"backbone"``: any other backbone state dict whose names are already the backbone's (e.g.
  OpenMMLab's ImageNet ``resnet*_v1c``/``resnest*`` and mmseg ``mit_b*`` files, keys optionally
  ``backbone.``-prefixed): every backbone key must be in the file; keys the backbone lacks
  (e.g. an ImageNet ``fc.*`` classifier) are left out and listed as ``unexpected``.

A full segmentor (any ``decode_head.*`` key after conversion) loads with ``strict=True``. A
backbone never loads partially: after conversion and after the format's documented classifier
keys are dropped, every key of ``model.backbone.state_dict()`` must be in the file with its
shape (apart from a format's documented target-only keys, e.g. the ViT tap norms that the
reference builds outside its backbone, listed as ``fresh``), else a ``ValueError`` names the
file and the first missing keys; a known format must also have no key left over (``strict``),
the unknown ``"backbone"`` format reports them. On a model built on PyTorch's meta device (the
``segctl weights fetch`` check) the backbone's tensors are replaced by the file's
(``load_state_dict(assign=True)``), so what loaded can be inspected. Every file is read
with ``torch.load(weights_only=True)`` on the CPU (:func:`trainer.checkpoint.load_weights_file`:
a file holding more than tensors is refused with a message naming it); URLs are opened with
``fsspec.open`` (fsspec is imported only for them).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from trainer.models.converters.hrnet_official import (
    BACKBONE_PREFIXES as HRNET_BACKBONE_PREFIXES,
    convert_hrnet_official,
    detect_head,
)
from trainer.models.converters.hrnet_imagenet import convert_hrnet_imagenet, is_hrnet_imagenet
from trainer.models.converters.internimage_official import (
    convert_internimage_classification,
    is_internimage_classification,
)
from trainer.models.converters.segformer_official import (
    convert_segformer_official,
    convert_segformer_official_segmentor,
    has_official_decoder,
    is_segformer_official,
    official_preset,
)
from trainer.models.converters.timm_vit import (
    TARGET_ONLY_PREFIXES as TIMM_VIT_TARGET_ONLY_PREFIXES,
    convert_timm_vit_backbone,
    is_timm_vit,
)
from trainer.models.converters.united_perception import (
    convert_united_perception,
    is_united_perception,
)
from trainer.models.segformer_official_head import SegFormerOfficialHead
from trainer.models.weights import load_segmentor_weights

log = logging.getLogger(__name__)

KINDS = ("auto", "mmseg", "segformer_official", "hrnet_official", "united_perception",
         "internimage", "timm_vit", "backbone")
# Backbone keys a format never holds, left as the model initialised them (the reference builds
# those modules outside its pretrained backbone; see the format's module).
TARGET_ONLY_PREFIXES: dict[str, tuple[str, ...]] = {"timm_vit": TIMM_VIT_TARGET_ONLY_PREFIXES}
_SHOWN = 10


@dataclass
class PretrainedLoad:
    """What :func:`load_pretrained` did.

    Attributes:
        source: the path or URL (``"<dict>"`` for an in-memory checkpoint).
        kind: the format used (one of :data:`KINDS` except ``"auto"``).
        target: ``"model"`` (full segmentor, strict) or ``"backbone"``.
        strict: whether the key sets had to match exactly (a backbone: no key left over
            after the format's drops; no backbone key may ever be missing).
        missing, unexpected: keys of the target the checkpoint lacked / keys it had that the
            target lacks (empty when ``strict``; ``missing`` is empty for every load that
            succeeds, kept for callers).
        dropped: source keys the converter discarded (classifiers, unmappable decoders).
        meta: ``meta`` of an mmseg checkpoint (e.g. ``mmseg_version``), else {}.
        fresh: backbone keys the format never holds (:data:`TARGET_ONLY_PREFIXES`), left as
            the model initialised them.
    """

    source: str
    kind: str
    target: str
    strict: bool
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    fresh: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the log."""
        def first(keys: list[str]) -> str:
            more = f" ... (+{len(keys) - _SHOWN})" if len(keys) > _SHOWN else ""
            return ", ".join(keys[:_SHOWN]) + more

        parts = [f"loaded {self.source} ({self.kind}) into the {self.target}"
                 f"{' (strict)' if self.strict else ''}"]
        if self.meta.get("mmseg_version"):
            parts.append(f"mmseg {self.meta['mmseg_version']}")
        for label, keys in (("missing", self.missing), ("unexpected", self.unexpected),
                            ("dropped", self.dropped),
                            ("left to the model's init (not in this format)", self.fresh)):
            if keys:
                parts.append(f"{len(keys)} {label}: {first(keys)}")
        return "; ".join(parts)


def read_checkpoint(path_or_url: str | os.PathLike, name: str | None = None) -> Any:
    """``torch.load(weights_only=True)`` of a local path, or of an fsspec URL opened lazily
    (:func:`trainer.checkpoint.load_weights_file`).

    Args:
        name: the file in error messages; default the path or URL.

    Raises:
        segctl.io.weights_cache.UnloadableWeightsError: the file holds pickled objects other than
            tensors, or is not a PyTorch file; the message names it.
        FileNotFoundError: a local path does not exist; whatever fsspec raises for a URL.
    """
    from trainer.checkpoint import load_weights_file

    return load_weights_file(path_or_url, name)


def unwrap_checkpoint(checkpoint: Mapping) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``(state_dict, meta)`` from the usual containers: mmseg ``{"meta", "state_dict"}``,
    InternImage/timm ``{"model"}``, this project's ``iter_*.pt`` (``"ema"`` before
    ``"model"``), United-Perception's ``{"model" | "state_dict", "ema": {"ema_state_dict"}}``
    (the EMA weights before the others, as UP's ``Saver.load_pretrain_or_resume``); a
    ``module.`` prefix on every key is removed."""
    meta = dict(checkpoint.get("meta") or {}) if isinstance(checkpoint.get("meta"), Mapping) else {}
    state: Mapping = checkpoint
    ema = checkpoint.get("ema")
    if isinstance(ema, Mapping) and isinstance(ema.get("model"), Mapping):
        state = ema["model"]
    elif isinstance(ema, Mapping) and isinstance(ema.get("ema_state_dict"), Mapping):
        state = ema["ema_state_dict"]
    else:
        for container in ("state_dict", "model"):
            inner = checkpoint.get(container)
            if isinstance(inner, Mapping):
                state = inner
                break
    state = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state, meta


def detect_kind(keys: list[str]) -> str:
    """The format of an unwrapped state dict from its key names (see the module docstring)."""
    if is_united_perception(keys):
        return "united_perception"
    if is_segformer_official(keys):
        return "segformer_official"
    bare = [k.removeprefix("model.") for k in keys]
    if detect_head(bare) != "none" or any(k.startswith("model.stage") for k in keys):
        return "hrnet_official"
    if any(k.startswith(("decode_head.", "auxiliary_head.")) for k in keys):
        return "mmseg"
    if is_internimage_classification(keys):
        return "internimage"
    if is_timm_vit(keys):
        return "timm_vit"
    if is_hrnet_imagenet(keys):
        return "hrnet_official"
    return "backbone"


def _strip_backbone(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    if state and all(k.startswith("backbone.") for k in state):
        return {k[len("backbone."):]: v for k, v in state.items()}
    return dict(state)


def _segformer_official(
    model: nn.Module, state: dict[str, Tensor], source: str, require_full: bool
) -> tuple[dict[str, Tensor], list[str], bool]:
    """``(state, dropped, full)`` for an NVlabs SegFormer checkpoint (see the module docstring)."""
    if not has_official_decoder(list(state)):
        converted, dropped = convert_segformer_official(state)
        return converted, dropped, False
    head = getattr(model, "decode_head", None)
    if isinstance(head, SegFormerOfficialHead):
        converted, dropped = convert_segformer_official_segmentor(state)
        return converted, dropped, True
    preset = official_preset(state)
    mismatch = (
        f"{source} is a full NVlabs SegFormer segmentor whose official decoder "
        f"(decode_head.linear_c1..c4, linear_fuse, linear_pred) does not fit this model's "
        f"{type(head).__name__}; use model {preset} (recipe model.name) to load it in full"
    )
    if require_full:
        raise ValueError(mismatch)
    log.warning("%s; loading its encoder only", mismatch)
    converted, dropped = convert_segformer_official(state)
    return converted, dropped, False


def load_pretrained(
    model: nn.Module,
    path_or_url: str | os.PathLike | Mapping,
    kind: str = "auto",
    *,
    require_full: bool = False,
    source: str | None = None,
) -> PretrainedLoad:
    """Load pretrained weights into a segmentor (``backbone``, ``decode_head``, ...).

    Args:
        model: the segmentor to fill.
        path_or_url: a local path, an fsspec URL (``s3://``, ``https://``, ``memory://``, ...),
            or an already loaded checkpoint mapping.
        kind: one of :data:`KINDS`; ``"auto"`` detects it from the keys.
        require_full: the checkpoint must fill the whole segmentor (evaluation); one that
            would fill only the backbone is an error.
        source: the checkpoint's name in the report and in error messages; default the path
            or URL (``"<dict>"`` for a mapping).

    Returns:
        A :class:`PretrainedLoad` report (log its :meth:`~PretrainedLoad.summary`).

    Raises:
        ValueError: unknown ``kind``; a converter rejects the keys; a full checkpoint does not
            fit the model (missing, unexpected or mis-shaped keys, listed); a backbone
            checkpoint shares no key with the backbone, lacks any backbone key (listed), has a
            mis-shaped key, or (known formats) a key left over; with ``require_full``, a checkpoint
            that holds a backbone only, or an official SegFormer segmentor for a model
            without the official head (the message names the preset to use).
        FileNotFoundError: a local path does not exist.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if source is None:
        source = "<dict>" if isinstance(path_or_url, Mapping) else os.fspath(path_or_url)
    checkpoint = (path_or_url if isinstance(path_or_url, Mapping)
                  else read_checkpoint(path_or_url, source))
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{source} holds a {type(checkpoint).__name__}, not a state dict")
    state, meta = unwrap_checkpoint(checkpoint)
    if kind == "auto":
        kind = detect_kind(list(state))

    dropped: list[str] = []
    known = True
    if kind == "segformer_official":
        state, dropped, full = _segformer_official(model, state, source, require_full)
    elif kind == "hrnet_official" and is_hrnet_imagenet(list(state)):
        state, dropped = convert_hrnet_imagenet(state)
        full = False
    elif kind == "timm_vit":
        state, dropped = convert_timm_vit_backbone(state, model.backbone)
        full = False
    elif kind == "hrnet_official":
        state = convert_hrnet_official(state)
        full = any(k.startswith("decode_head.") for k in state)
    elif kind == "united_perception":
        state, dropped = convert_united_perception(state)
        full = any(k.startswith("decode_head.") for k in state)
    elif kind == "internimage" and is_internimage_classification(list(state)):
        state, dropped = convert_internimage_classification(state)
        full = False
    elif kind in ("mmseg", "internimage"):
        full = any(k.startswith("decode_head.") for k in state)
        known = full
    else:
        full, known = False, False

    if require_full and not full:
        raise ValueError(f"{source} ({kind}) holds a backbone only, not a full segmentor")
    if full:
        try:
            load_segmentor_weights(model, state, strict=True)
        except ValueError as exc:
            raise ValueError(f"{source} ({kind}) does not fit the model: {exc}") from None
        report = PretrainedLoad(source, kind, "model", True, dropped=dropped, meta=meta)
    else:
        backbone_state = _strip_backbone(state)
        if kind == "hrnet_official":
            backbone_state = {k: v for k, v in backbone_state.items()
                              if k.startswith(HRNET_BACKBONE_PREFIXES)}
        own = model.backbone.state_dict()
        if not set(backbone_state) & set(own):
            raise ValueError(
                f"{source} ({kind}) fits neither the model nor its backbone: no key in common "
                f"(checkpoint keys like {', '.join(list(backbone_state)[:5])}; backbone keys like "
                f"{', '.join(list(own)[:5])})"
            )
        fresh, unexpected = _fill_backbone(model.backbone, backbone_state, source, kind, known)
        report = PretrainedLoad(source, kind, "backbone", known, [], unexpected, dropped, meta,
                                fresh)
    log.info("%s", report.summary())
    return report


def _fill_backbone(
    backbone: nn.Module, state: Mapping[str, Tensor], source: str, kind: str, known: bool
) -> tuple[list[str], list[str]]:
    """Load ``state`` (backbone-relative keys) into ``backbone``, never partially.

    Every key of ``backbone.state_dict()`` must be in ``state`` with its shape, except the
    format's :data:`TARGET_ONLY_PREFIXES`; with ``known``, ``state`` may hold no other key.
    Tensors are copied, or assigned where the backbone is on the meta device.

    Returns:
        ``(fresh, unexpected)``: the target-only keys left as initialised, the keys of
        ``state`` the backbone lacks (left out; empty with ``known``).

    Raises:
        ValueError: missing, mis-shaped or (with ``known``) unexpected keys; the message names
            ``source``, ``kind`` and the first offending keys.
    """
    own = backbone.state_dict()
    target_only = TARGET_ONLY_PREFIXES.get(kind, ())
    absent = [k for k in own if k not in state]
    fresh = [k for k in absent if target_only and k.startswith(target_only)]
    missing = [k for k in absent if not (target_only and k.startswith(target_only))]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]

    def first(keys: list[str]) -> str:
        return ", ".join(keys[:_SHOWN]) + (f" ... (+{len(keys) - _SHOWN})"
                                           if len(keys) > _SHOWN else "")

    problems = []
    if missing:
        problems.append(f"{len(missing)} of the backbone's {len(own)} keys are missing from the "
                        f"file (a partially filled backbone is refused): {first(missing)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: {first(mismatched)}")
    if known and unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {first(unexpected)}")
    if problems:
        raise ValueError(f"{source} ({kind}) does not fit the backbone: " + "; ".join(problems))
    on_meta = any(t.is_meta for t in own.values())
    backbone.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False,
                             assign=on_meta)
    return fresh, unexpected
