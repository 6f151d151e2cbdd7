"""Model presets: the architectures a recipe can name in ``model.name``.

Each preset names a builder in ``trainer.models.MODEL_BUILDERS`` (the same string) and carries
what the control plane shows about it (method and backbone as the published tables write them).
No torch here: parameter counts are computed by the trainer, on the meta device.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ModelPreset(BaseModel):
    """One buildable segmentation model.

    Attributes:
        name: preset name used in recipes (``model.name``) and builder key in the trainer.
        method: the decode method as the published tables name it (e.g. ``SegFormer``).
        backbone: the backbone as the published tables name it (e.g. ``MiT-B0``).
        source: reference implementation the architecture and parameter names follow.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    method: str
    backbone: str
    source: str


_MIT_SOURCE = (
    "Xie et al. 2021, SegFormer (arXiv 2105.15203); parameter names of mmsegmentation 1.x "
    "mmseg/models/backbones/mit.py and decode_heads/segformer_head.py"
)
_MIT_OFFICIAL_SOURCE = (
    "Xie et al. 2021, SegFormer (arXiv 2105.15203); the official NVlabs/SegFormer decoder "
    "(decode_heads/segformer_head.py: linear_c1..c4, linear_fuse, linear_pred; 256 wide for B0/B1, "
    "768 for B2..B5), for the official checkpoints; encoder names of mmsegmentation 1.x"
)

_HRNET_SOURCE = (
    "Wang et al. 2020, Deep High-Resolution Representation Learning (arXiv 1908.07919); "
    "mmsegmentation backbones/hrnet.py and decode_heads/fcn_head.py"
)
_OCR_SOURCE = (
    "Yuan et al. 2020, Object-Contextual Representations (arXiv 1909.11065); mmsegmentation "
    "decode_heads/ocr_head.py with segmentors/cascade_encoder_decoder.py"
)
_DEEPLAB_SOURCE = (
    "Chen et al. 2017, Rethinking Atrous Convolution (arXiv 1706.05587); mmsegmentation "
    "decode_heads/aspp_head.py, backbones/resnet.py, resnest.py, vit.py"
)
_MCIBI_SOURCE = (
    "Jin et al. 2021, Mining Contextual Information Beyond Image (arXiv 2108.11819); "
    "sssegmentation ssseg/modules/models/segmentors/mcibi (configs ssseg/configs/mcibi/)"
)

_INTERNIMAGE_SOURCE = (
    "Wang et al. 2023, InternImage (arXiv 2211.05778) with UperNet (Xiao et al. 2018); "
    "OpenGVLab/InternImage segmentation/mmseg_custom/models/backbones/intern_image.py"
)

_HRNET_BACKBONES = {
    "w18_small_v1": "HRNetV2-W18-Small-v1",
    "w18_small": "HRNetV2-W18-Small",
    "w18": "HRNetV2-W18",
    "w48": "HRNetV2-W48",
}
_DEEPLAB_BACKBONES = {
    "r50": "R-50-D8",
    "r101": "R-101-D8",
    "resnest101": "ResNeSt-101",
    "hrnetv2_w48": "HRNetV2-W48",
    "vit_large": "ViT-L/16",
}


def _presets() -> list[ModelPreset]:
    presets = [
        ModelPreset(name=f"segformer_mit_b{i}", method="SegFormer", backbone=f"MiT-B{i}", source=_MIT_SOURCE)
        for i in range(6)
    ]
    presets += [
        ModelPreset(
            name=f"segformer_official_mit_b{i}",
            method="SegFormer (official head)",
            backbone=f"MiT-B{i}",
            source=_MIT_OFFICIAL_SOURCE,
        )
        for i in range(6)
    ]
    presets += [
        ModelPreset(name=f"fcn_hrnetv2_{key}", method="FCN", backbone=label, source=_HRNET_SOURCE)
        for key, label in _HRNET_BACKBONES.items()
    ]
    presets += [
        ModelPreset(name=f"ocr_hrnetv2_{key}", method="OCR", backbone=label, source=_OCR_SOURCE)
        for key, label in _HRNET_BACKBONES.items()
        if key != "w18_small_v1"
    ]
    presets += [
        ModelPreset(name=f"deeplabv3_{key}", method="DeepLabV3", backbone=label, source=_DEEPLAB_SOURCE)
        for key, label in _DEEPLAB_BACKBONES.items()
    ]
    presets += [
        ModelPreset(
            name=f"deeplabv3_mcibi_{key}", method="DeepLabV3 + MCIBI", backbone=label, source=_MCIBI_SOURCE
        )
        for key, label in _DEEPLAB_BACKBONES.items()
    ]
    presets += [
        ModelPreset(
            name=f"upernet_internimage_{size}",
            method="UperNet",
            backbone=f"InternImage-{size.upper()}",
            source=_INTERNIMAGE_SOURCE,
        )
        for size in ("t", "s", "b", "l", "xl", "h")
    ]
    return presets


MODEL_PRESETS: dict[str, ModelPreset] = {preset.name: preset for preset in _presets()}
