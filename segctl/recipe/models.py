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

MODEL_PRESETS: dict[str, ModelPreset] = {
    f"segformer_mit_b{i}": ModelPreset(
        name=f"segformer_mit_b{i}", method="SegFormer", backbone=f"MiT-B{i}", source=_MIT_SOURCE
    )
    for i in range(6)
}
