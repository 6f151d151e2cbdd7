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
* ``"hrnet_official"``: HRNet-Semantic-Segmentation (:mod:`.hrnet_official`).
* ``"united_perception"``: ModelTC/United-Perception segmentation checkpoints (keys
  ``encoder.*``/``decoder.*``; SegFormer, HRNet FCN and OCR heads; :mod:`.united_perception`).
  Their ``ema["ema_state_dict"]`` entry wins over ``model``/``state_dict``, as UP evaluates
  with the EMA weights; an encoder-only file loads into the backbone.
* ``"internimage"``: InternImage segmentation checkpoints (keys already ``backbone.``-prefixed
  as ours: handled as ``"mmseg"``) and ImageNet classification checkpoints (backbone only,
  :mod:`.internimage_official`).
* ``"backbone"``: any other backbone state dict (e.g. mmseg/mmcls ImageNet ResNet files, keys
  optionally ``backbone.``-prefixed): loaded into ``model.backbone`` non-strictly, failing when
  no key fits.

A full segmentor (any ``decode_head.*`` key after conversion) loads with ``strict=True``; a
backbone with ``strict=True`` where the format is known, else non-strictly. Every file is read
with ``torch.load(weights_only=True)`` on the CPU; URLs are opened with ``fsspec.open`` (fsspec
is imported only for them).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from trainer.models.converters.hrnet_official import (
    BACKBONE_PREFIXES as HRNET_BACKBONE_PREFIXES,
    convert_hrnet_official,
    detect_head,
)
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
from trainer.models.converters.united_perception import (
    convert_united_perception,
    is_united_perception,
)
from trainer.models.segformer_official_head import SegFormerOfficialHead
from trainer.models.weights import load_segmentor_weights

log = logging.getLogger(__name__)

KINDS = ("auto", "mmseg", "segformer_official", "hrnet_official", "united_perception",
         "internimage", "backbone")
_SHOWN = 10


@dataclass
class PretrainedLoad:
    """What :func:`load_pretrained` did.

    Attributes:
        source: the path or URL (``"<dict>"`` for an in-memory checkpoint).
        kind: the format used (one of :data:`KINDS` except ``"auto"``).
        target: ``"model"`` (full segmentor, strict) or ``"backbone"``.
        strict: whether the key sets had to match exactly.
        missing, unexpected: keys of the target the checkpoint lacked / keys it had that the
            target lacks (empty when ``strict``).
        dropped: source keys the converter discarded (classifiers, unmappable decoders).
        meta: ``meta`` of an mmseg checkpoint (e.g. ``mmseg_version``), else {}.
    """

    source: str
    kind: str
    target: str
    strict: bool
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

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
                            ("dropped", self.dropped)):
            if keys:
                parts.append(f"{len(keys)} {label}: {first(keys)}")
        return "; ".join(parts)


def read_checkpoint(path_or_url: str | os.PathLike) -> Any:
    """``torch.load(weights_only=True)`` of a local path, or of an fsspec URL opened lazily.

    Raises:
        FileNotFoundError: a local path does not exist; whatever fsspec raises for a URL.
    """
    text = os.fspath(path_or_url)
    if "://" not in text:
        return torch.load(text, map_location="cpu", weights_only=True)
    import fsspec

    with fsspec.open(text, "rb") as handle:
        return torch.load(handle, map_location="cpu", weights_only=True)


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
            checkpoint shares no key with the backbone; with ``require_full``, a checkpoint
            that holds a backbone only, or an official SegFormer segmentor for a model
            without the official head (the message names the preset to use).
        FileNotFoundError: a local path does not exist.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if source is None:
        source = "<dict>" if isinstance(path_or_url, Mapping) else os.fspath(path_or_url)
    checkpoint = path_or_url if isinstance(path_or_url, Mapping) else read_checkpoint(path_or_url)
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{source} holds a {type(checkpoint).__name__}, not a state dict")
    state, meta = unwrap_checkpoint(checkpoint)
    if kind == "auto":
        kind = detect_kind(list(state))

    dropped: list[str] = []
    known = True
    if kind == "segformer_official":
        state, dropped, full = _segformer_official(model, state, source, require_full)
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
        try:
            missing, unexpected = load_segmentor_weights(model.backbone, backbone_state,
                                                         strict=known)
        except ValueError as exc:
            raise ValueError(f"{source} ({kind}) does not fit the backbone: {exc}") from None
        report = PretrainedLoad(source, kind, "backbone", known, missing, unexpected, dropped,
                                meta)
    log.info("%s", report.summary())
    return report
