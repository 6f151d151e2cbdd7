"""Every zoo recipe's ``model.init_checkpoint`` loads strictly, proven per file format.

For each format of the files the recipes name, a generator writes a state dict with that
format's real key names: our backbone's names (``model.backbone.state_dict()``) taken back
through the inverse of the loader's mapping, plus the classifier and other extra keys the real
file carries, written from the reference code cited beside each generator. Values are random;
tensors are strided views of a small random storage (``value[i, j, ...] = s[i + j + ...]``,
different along every dimension), so files of billion-parameter backbones stay a few MB. Each
file is saved with ``torch.save`` under the real file name, the hash in the name recomputed
from the saved bytes (``segctl.weights.check_name_hash`` accepts it).

Then, for EVERY recipe under ``recipes/`` (none skipped; the quickstart trains from scratch),
the recipe's URL is mapped to its format (:data:`URL_FORMATS`; a URL without a generator fails)
and ``load_pretrained`` must fill the whole backbone: the expected kind, no missing key, the
documented drops, and a few tensors, by name after mapping, equal to the file's (the ViT
position embedding equal to the reference's resize). Each distinct model (name, classes,
settings) is built once: on the CPU below :data:`CPU_PARAMETERS` (the job's copy path), else
on the meta device, where the loader assigns the file's tensors (the ``segctl weights fetch``
path). Last, over HTTP: ``segctl weights fetch`` of two zoo recipes (timm HRNet-W18-small-v1,
OpenMMLab ResNet-50-V1c) with the URL pointed at a local server.

References read (commit, file):

* huggingface/pytorch-image-models@736f209e ``timm/models/vision_transformer.py``
  (``jx_vit_large_p16_384`` url; ``VisionTransformer``, ``Block``, ``Attention``, ``Mlp``,
  ``PatchEmbed`` names; ``vit_large_patch16_384``: img 384, patch 16, C 1024, depth 24, qkv
  bias, LayerNorm eps 1e-6, ``head`` Linear(1024, 1000));
* huggingface/pytorch-image-models@c0560cbf ``timm/models/hrnet.py`` (``hrnet_w18_small`` =
  ``v0.1-hrnet/hrnet_w18_small_v1-f460c6bc.pth``; ``HighResolutionNet`` names, ``_make_head``);
* HRNet/HRNet-Image-Classification@f760c988 ``lib/models/cls_hrnet.py`` (``_make_head``:
  incre_modules, downsamp_modules (3x3 conv with bias), final_layer (1x1 conv 1024 -> 2048 with
  bias), ``classifier`` Linear(2048, 1000)) and README.md (the SSLD files, "converted from
  PaddlePaddle");
* SegmentationBLWX/sssegmentation@eb1878c1 ``ssseg/modules/models/backbones/vit.py``
  (``vitconvert``, ``resizeposembed``: class token kept, bilinear, align_corners False),
  ``resnet.py`` / ``resnest.py`` (the OpenMMLab ``pretrain/third_party`` urls, loaded
  non-strictly), ``ssseg/modules/models/segmentors/mcibi/mcibi.py`` (``norm_layers`` built in
  the segmentor);
* OpenGVLab/InternImage@31c962dc ``classification/models/intern_image.py`` (``conv_head`` /
  ``head`` for T..XL; ``dcnv3_head_x4``, ``dcnv3_head_x3``, ``clip_projector``
  (``AttentionPoolingBlock``: ``norm1_q/k/v``, ``cross_dcn.q/k/v``, ``q/k/v_bias``, ``proj``),
  ``fc_norm``, ``head`` for H; checkpoints under ``model``);
* open-mmlab/mmsegmentation@048aa6a9 ``tools/model_converters/mit2mmseg.py`` (the ``mit_b*``
  files: mmseg names, ``head`` skipped, a bare dict); open-mmlab/mmsegmentation#148 (a
  ``resnet50_v1c`` load whose only mismatch is ``fc.weight, fc.bias`` unexpected) and #840 (an
  ``hrnetv2_w18`` load whose unexpected keys are the ``incre_modules`` ... head).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import Tensor

from segctl.recipe import dataset_preset, load_recipe
from segctl.io.weights_cache import url_file_name
from segctl.weights import check_name_hash, name_hash
from tests.servers import range_server  # noqa: F401  (fixture)
from trainer.models.converters.pretrained import load_pretrained

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
ALL_RECIPES = sorted(str(p.relative_to(RECIPES)) for p in RECIPES.rglob("*.yaml"))
FROM_SCRATCH = {"quickstart.yaml"}  # trains from random weights on procedural data
CPU_PARAMETERS = 100_000_000  # models with fewer parameters are built (and filled) on the CPU

Backbone = dict[str, Tensor]  # a backbone state dict (meta tensors: names, shapes, dtypes)


# --- random tensors with a small storage ---------------------------------------------------------


def _random_like(like: Tensor, gen: torch.Generator) -> Tensor:
    """Random values of ``like``'s shape and dtype, as a strided view of a small storage."""
    shape = tuple(like.shape)
    if not like.dtype.is_floating_point:  # BN num_batches_tracked
        return torch.randint(0, 10_000, shape, generator=gen, dtype=like.dtype)
    if not shape:
        return torch.randn((), generator=gen)
    storage = torch.randn(sum(shape) - len(shape) + 1, generator=gen)
    return storage.as_strided(shape, (1,) * len(shape))


def _shape(*shape: int) -> Tensor:
    return torch.empty(shape, device="meta")


def _bn(prefix: str, channels: int, counters: bool = True) -> dict[str, Tensor]:
    keys = ["weight", "bias", "running_mean", "running_var"]
    out = {f"{prefix}.{k}": _shape(channels) for k in keys}
    if counters:
        out[f"{prefix}.num_batches_tracked"] = torch.empty((), dtype=torch.long, device="meta")
    return out


# --- the formats -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Format:
    """One file format: how to write a file from our backbone, and what loading it must do.

    Attributes:
        name: words for messages.
        kind: the kind ``load_pretrained`` must detect.
        names: ``(our backbone state) -> {file key: meta tensor}`` (the file's names and shapes).
        container: wraps the state dict as the real file does (bare, or ``{"model": ...}``).
        to_ours: a file key -> our backbone key (None: the loader drops or leaves it out).
        spot: file keys whose loaded tensors are compared (those present for the model).
        unexpected: file keys the loader leaves out as unknown (``"backbone"`` kind only).
        fresh_prefix: our backbone keys the format never holds.
        counters_added: the file has no BN ``num_batches_tracked``; the loader adds them as 0.
    """

    name: str
    kind: str
    names: Callable[[Backbone], dict[str, Tensor]]
    to_ours: Callable[[str], str | None]
    spot: tuple[str, ...]
    container: Callable[[dict], dict] = dict
    unexpected: tuple[str, ...] = ()
    fresh_prefix: str | None = None
    counters_added: bool = False


# HRNet ImageNet classification files (cls_hrnet.py _make_head; timm hrnet.py _make_head).
HRNET_HEAD_CHANNELS = (32, 64, 128, 256)
HRNET_HEAD_PREFIXES = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")


def _hrnet_classification_head(ours: Backbone, counters: bool) -> dict[str, Tensor]:
    """cls_hrnet.py ``_make_head``: per branch one Bottleneck (expansion 4) to 32/64/128/256
    planes with a 1x1 conv + BN shortcut; 3x3 stride-2 convs (bias) + BN between the levels;
    ``final_layer`` 1x1 conv 1024 -> 2048 (bias) + BN; ``classifier`` Linear(2048, 1000)."""
    widths = [ours[f"stage4.0.branches.{i}.0.conv1.weight"].shape[0] for i in range(4)]
    head: dict[str, Tensor] = {}
    for i, (c, planes) in enumerate(zip(widths, HRNET_HEAD_CHANNELS)):
        p = f"incre_modules.{i}.0"
        head[f"{p}.conv1.weight"] = _shape(planes, c, 1, 1)
        head.update(_bn(f"{p}.bn1", planes, counters))
        head[f"{p}.conv2.weight"] = _shape(planes, planes, 3, 3)
        head.update(_bn(f"{p}.bn2", planes, counters))
        head[f"{p}.conv3.weight"] = _shape(planes * 4, planes, 1, 1)
        head.update(_bn(f"{p}.bn3", planes * 4, counters))
        head[f"{p}.downsample.0.weight"] = _shape(planes * 4, c, 1, 1)
        head.update(_bn(f"{p}.downsample.1", planes * 4, counters))
    for i in range(3):
        cin, cout = HRNET_HEAD_CHANNELS[i] * 4, HRNET_HEAD_CHANNELS[i + 1] * 4
        head[f"downsamp_modules.{i}.0.weight"] = _shape(cout, cin, 3, 3)
        head[f"downsamp_modules.{i}.0.bias"] = _shape(cout)
        head.update(_bn(f"downsamp_modules.{i}.1", cout, counters))
    head["final_layer.0.weight"] = _shape(2048, 1024, 1, 1)
    head["final_layer.0.bias"] = _shape(2048)
    head.update(_bn("final_layer.1", 2048, counters))
    head["classifier.weight"] = _shape(1000, 2048)
    head["classifier.bias"] = _shape(1000)
    return head


def openmmlab_hrnet_names(ours: Backbone) -> dict[str, Tensor]:
    """OpenMMLab's ``pretrain/third_party/hrnetv2_w*`` = the official ImageNet files:
    cls_hrnet.py names (the backbone's, unchanged) + the classification head, with BN
    counters (mmsegmentation#840 lists ``incre_modules.0.0.bn1.num_batches_tracked``)."""
    return {**ours, **_hrnet_classification_head(ours, counters=True)}


def hrnet_ssld_names(ours: Backbone) -> dict[str, Tensor]:
    """HRNet_W*_C_ssld_pretrained.pth: cls_hrnet.py names + head, converted from PaddleClas,
    written here without BN counters (Paddle's BN has none; whether the released file has
    them is not documented: the loader adds them as 0, and the other HRNet formats carry
    them)."""
    backbone = {k: v for k, v in ours.items() if not k.endswith("num_batches_tracked")}
    return {**backbone, **_hrnet_classification_head(ours, counters=False)}


def timm_hrnet_names(ours: Backbone) -> dict[str, Tensor]:
    """timm ``hrnet_w18_small_v1-f460c6bc.pth``: timm hrnet.py ``HighResolutionNet``
    (head='classification'): the cls_hrnet.py names + the same head (timm issue #232 lists
    ``downsamp_modules.0.1.num_batches_tracked``: counters present)."""
    return {**ours, **_hrnet_classification_head(ours, counters=True)}


def _hrnet_to_ours(key: str) -> str | None:
    return None if key.startswith(HRNET_HEAD_PREFIXES) else key


HRNET_SPOT = ("conv1.weight", "bn2.running_var", "layer1.0.conv3.weight",
              "transition1.1.0.0.weight", "stage2.0.fuse_layers.0.1.0.weight",
              "stage4.0.branches.3.0.bn2.running_mean", "layer1.0.bn1.num_batches_tracked")


def openmmlab_resnet_names(ours: Backbone) -> dict[str, Tensor]:
    """OpenMMLab ``resnet{50,101}_v1c``: mmcv/mmseg ResNetV1c names (deep stem ``stem.0..7``,
    ``layer*``) = the backbone's, plus the ImageNet classifier ``fc`` Linear(2048, 1000)
    (mmsegmentation#148: ``fc.weight, fc.bias`` the only unexpected keys)."""
    return {**ours, "fc.weight": _shape(1000, 2048), "fc.bias": _shape(1000)}


def openmmlab_resnest_names(ours: Backbone) -> dict[str, Tensor]:
    """OpenMMLab ``resnest101_d2``: mmseg ResNeSt names (``conv2.conv/bn0/fc1/bn1/fc2``,
    ``downsample.1/2`` after the AvgPool) = the backbone's, plus an ImageNet ``fc`` classifier
    (assumed like the ResNetV1c files; the loader leaves it out either way)."""
    return {**ours, "fc.weight": _shape(1000, 2048), "fc.bias": _shape(1000)}


def mmseg_mit_names(ours: Backbone) -> dict[str, Tensor]:
    """mmseg ``mit_b*_20220624``: ``mit2mmseg.convert_mit`` output (``layers.{i}.0`` patch
    embedding, ``layers.{i}.1.{j}`` blocks with packed ``attn.attn.in_proj_*``, ``layers.{i}.2``
    norm; NVlabs ``head`` skipped) = the backbone's names, nothing else."""
    return dict(ours)


def _internimage_width(ours: Backbone) -> int:
    """``num_features`` = channels * 2 ** 3 (StemLayer's second conv outputs ``channels``)."""
    return ours["patch_embed.conv2.weight"].shape[0] * 8


def internimage_names(ours: Backbone) -> dict[str, Tensor]:
    """InternImage-T/S/B/L/XL ImageNet files: the backbone's names (classification and
    segmentation ``InternImage`` share them) + ``conv_head`` (1x1 conv to 1.5 x num_features,
    no bias; BN in a Sequential) + ``head`` Linear(1.5 x num_features, 1000)."""
    nf = _internimage_width(ours)
    wide = int(nf * 1.5)
    return {**ours, "conv_head.0.weight": _shape(wide, nf, 1, 1), **_bn("conv_head.1.0", wide),
            "head.weight": _shape(1000, wide), "head.bias": _shape(1000)}


def internimage_h_names(ours: Backbone) -> dict[str, Tensor]:
    """InternImage-H ImageNet file (use_clip_projector): the backbone's names +
    ``dcnv3_head_x4`` (1x1 conv num_features -> 1024 * 2 ** 2, bias), ``dcnv3_head_x3`` (1x1
    conv num_features / 2 -> 1024, bias), ``clip_projector`` (AttentionPoolingBlock(1024, 16
    heads, qkv_bias, out 768)), ``fc_norm`` LN(768), ``head`` Linear(768, 1000)."""
    nf, dim, out = _internimage_width(ours), 1024, 768
    extra = {"dcnv3_head_x4.0.weight": _shape(dim * 4, nf, 1, 1),
             "dcnv3_head_x4.0.bias": _shape(dim * 4),
             "dcnv3_head_x3.weight": _shape(dim, nf // 2, 1, 1), "dcnv3_head_x3.bias": _shape(dim)}
    for norm in ("norm1_q", "norm1_k", "norm1_v"):
        extra[f"clip_projector.{norm}.0.weight"] = _shape(dim)
        extra[f"clip_projector.{norm}.0.bias"] = _shape(dim)
    for name in ("q", "k", "v"):
        extra[f"clip_projector.cross_dcn.{name}.weight"] = _shape(dim, dim)
        extra[f"clip_projector.cross_dcn.{name}_bias"] = _shape(dim)
    extra["clip_projector.cross_dcn.proj.weight"] = _shape(out, dim)
    extra["clip_projector.cross_dcn.proj.bias"] = _shape(out)
    extra.update({"fc_norm.0.weight": _shape(out), "fc_norm.0.bias": _shape(out),
                  "head.weight": _shape(1000, out), "head.bias": _shape(1000)})
    return {**ours, **extra}


INTERNIMAGE_HEAD_PREFIXES = ("conv_head.", "head.", "dcnv3_head_x4.", "dcnv3_head_x3.",
                             "clip_projector.", "fc_norm.")
INTERNIMAGE_SPOT = ("patch_embed.conv1.weight", "levels.0.blocks.0.dcn.offset.weight",
                    "levels.1.blocks.0.dcn.input_proj.bias", "levels.2.downsample.conv.weight",
                    "levels.3.blocks.1.mlp.fc2.weight", "levels.3.norm.0.bias")

# timm ViT (vision_transformer.py@736f209e) <- ours (trainer/models/vit.py names).
_VIT_INVERSE = ((".ln1.", ".norm1."), (".ln2.", ".norm2."), (".attn.attn.in_proj_", ".attn.qkv."),
                (".attn.attn.out_proj.", ".attn.proj."), (".ffn.layers.0.0.", ".mlp.fc1."),
                (".ffn.layers.1.", ".mlp.fc2."))
VIT_PRETRAIN_GRID = 384 // 16  # jx_vit_large_p16_384: a 24 x 24 patch grid


def timm_vit_names(ours: Backbone) -> dict[str, Tensor]:
    """``jx_vit_large_p16_384``: ``blocks.{i}.norm1/attn.qkv/attn.proj/norm2/mlp.fc1/mlp.fc2``,
    ``patch_embed.proj``, ``cls_token``, ``pos_embed`` (1, 1 + 24 * 24, C), final ``norm``,
    ``head`` Linear(C, 1000). Our ``norm_layers`` are not in it (built by the segmentor)."""
    out: dict[str, Tensor] = {}
    for key, value in ours.items():
        if key.startswith("norm_layers."):
            continue
        if key.startswith("layers."):
            key = "blocks." + key[len("layers."):]
            for mine, theirs in _VIT_INVERSE:
                key = key.replace(mine, theirs)
        elif key.startswith("patch_embed.projection."):
            key = key.replace("patch_embed.projection.", "patch_embed.proj.")
        elif key == "pos_embed":
            value = _shape(1, 1 + VIT_PRETRAIN_GRID ** 2, value.shape[-1])
        out[key] = value
    c = ours["cls_token"].shape[-1]
    out.update({"norm.weight": _shape(c), "norm.bias": _shape(c),
                "head.weight": _shape(1000, c), "head.bias": _shape(1000)})
    return out


def _timm_vit_to_ours(key: str) -> str | None:
    if key.startswith(("head.", "norm.")):
        return None
    if key.startswith("blocks."):
        key = "layers." + key[len("blocks."):]
        for mine, theirs in _VIT_INVERSE:
            key = key.replace(theirs, mine)
        return key
    return key.replace("patch_embed.proj.", "patch_embed.projection.")


FORMATS = {
    "openmmlab_hrnet": Format(
        "OpenMMLab third_party HRNetV2 ImageNet (official cls_hrnet names)", "hrnet_official",
        openmmlab_hrnet_names, _hrnet_to_ours, HRNET_SPOT),
    "hrnet_ssld": Format(
        "HRNet-Image-Classification SSLD (converted from PaddleClas)", "hrnet_official",
        hrnet_ssld_names, _hrnet_to_ours, HRNET_SPOT, counters_added=True),
    "timm_hrnet": Format(
        "timm HRNet ImageNet (hrnet.py names)", "hrnet_official", timm_hrnet_names,
        _hrnet_to_ours, HRNET_SPOT),
    "openmmlab_resnet": Format(
        "OpenMMLab third_party ResNetV1c ImageNet (mmcv names + fc)", "backbone",
        openmmlab_resnet_names, lambda k: None if k.startswith("fc.") else k,
        ("stem.0.weight", "stem.7.running_var", "layer1.0.downsample.0.weight",
         "layer3.5.conv2.weight", "layer4.2.bn3.bias"), unexpected=("fc.weight", "fc.bias")),
    "openmmlab_resnest": Format(
        "OpenMMLab third_party ResNeSt ImageNet (mmseg names + fc)", "backbone",
        openmmlab_resnest_names, lambda k: None if k.startswith("fc.") else k,
        ("stem.3.weight", "layer1.0.conv2.fc1.bias", "layer2.0.downsample.1.weight",
         "layer3.22.conv2.bn0.running_mean", "layer4.2.conv3.weight"),
        unexpected=("fc.weight", "fc.bias")),
    "mmseg_mit": Format(
        "mmseg MiT ImageNet (mit2mmseg names)", "backbone", mmseg_mit_names, lambda k: k,
        ("layers.0.0.projection.weight", "layers.0.1.0.attn.attn.in_proj_weight",
         "layers.1.1.1.ffn.layers.1.weight", "layers.3.1.1.attn.attn.out_proj.bias",
         "layers.3.2.weight")),
    "internimage": Format(
        "InternImage ImageNet (conv_head + head)", "internimage", internimage_names,
        lambda k: None if k.startswith(INTERNIMAGE_HEAD_PREFIXES) else k, INTERNIMAGE_SPOT,
        container=lambda state: {"model": state}),
    "internimage_h": Format(
        "InternImage-H ImageNet (clip projector head)", "internimage", internimage_h_names,
        lambda k: None if k.startswith(INTERNIMAGE_HEAD_PREFIXES) else k,
        (*INTERNIMAGE_SPOT, "levels.2.post_norms.4.0.weight",
         "levels.0.blocks.0.dcn.center_feature_scale_proj_weight"),
        container=lambda state: {"model": state}),
    "timm_vit": Format(
        "timm/JAX ViT ImageNet (vision_transformer.py names)", "timm_vit", timm_vit_names,
        _timm_vit_to_ours,
        ("cls_token", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight",
         "blocks.11.attn.proj.bias", "blocks.23.mlp.fc1.weight", "blocks.23.norm2.bias"),
        fresh_prefix="norm_layers."),
}

_MMLAB = "https://download.openmmlab.com"
_HRNET_CLS = ("https://github.com/HRNet/HRNet-Image-Classification/releases/download/"
              "PretrainedWeights")
_TIMM = "https://github.com/rwightman/pytorch-image-models/releases/download"
_INTERNIMAGE = "https://huggingface.co/OpenGVLab/InternImage/resolve/main"
_MIT = f"{_MMLAB}/mmsegmentation/v0.5/pretrain/segformer"
#: Every init-checkpoint URL of the zoo -> its file format.
URL_FORMATS = {
    f"{_MMLAB}/pretrain/third_party/hrnetv2_w18-00eb2006.pth": "openmmlab_hrnet",
    f"{_MMLAB}/pretrain/third_party/hrnetv2_w18_small-b5a04e21.pth": "openmmlab_hrnet",
    f"{_MMLAB}/pretrain/third_party/hrnetv2_w48-d2186c55.pth": "openmmlab_hrnet",
    f"{_HRNET_CLS}/HRNet_W18_C_ssld_pretrained.pth": "hrnet_ssld",
    f"{_HRNET_CLS}/HRNet_W48_C_ssld_pretrained.pth": "hrnet_ssld",
    f"{_TIMM}/v0.1-hrnet/hrnet_w18_small_v1-f460c6bc.pth": "timm_hrnet",
    f"{_MMLAB}/pretrain/third_party/resnet50_v1c-2cccc1ad.pth": "openmmlab_resnet",
    f"{_MMLAB}/pretrain/third_party/resnet101_v1c-e67eebb6.pth": "openmmlab_resnet",
    f"{_MMLAB}/pretrain/third_party/resnest101_d2-f3b931b2.pth": "openmmlab_resnest",
    **{f"{_MIT}/mit_b{i}_20220624-{h}.pth": "mmseg_mit" for i, h in enumerate(
        ("7e0fe6dd", "02e5a6a1", "66e8bf70", "13b1141c", "d588d980", "658746d9"))},
    **{f"{_INTERNIMAGE}/internimage_{v}.pth": "internimage" for v in (
        "t_1k_224", "s_1k_224", "b_1k_224", "l_22k_192to384", "xl_22k_192to384")},
    f"{_INTERNIMAGE}/internimage_h_jointto22k_384.pth": "internimage_h",
    f"{_TIMM}/v0.1-vitjx/jx_vit_large_p16_384-b3be5167.pth": "timm_vit",
}


# --- recipes, models, files --------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def recipe(relative: str):
    return load_recipe(RECIPES / relative).recipe


def model_key(relative: str) -> str:
    """What decides the model's parameters: name, class count, settings (but the init file
    and the drop-path rate)."""
    r = recipe(relative)
    settings = r.model.model_dump(mode="json", exclude={"init_checkpoint", "drop_path_rate"})
    return json.dumps([settings, dataset_preset(r).num_classes], sort_keys=True)


def build(relative: str, device: str):
    from trainer.models.build import build_model

    r = recipe(relative)
    bare = r.model_copy(update={"model": r.model.model_copy(update={"init_checkpoint": None})})
    with torch.device(device):
        return build_model(bare, load_init=False)


@functools.lru_cache(maxsize=None)
def recipe_for_url(url: str) -> str:
    return next(p for p in ALL_RECIPES if recipe(p).model.init_checkpoint == url)


def saved_name(file_name: str, data: bytes) -> str:
    """The real file name with the hash in it (if any) recomputed from ``data``."""
    expected = name_hash(file_name)
    if expected is None:
        return file_name
    digest = hashlib.sha256(data).hexdigest()
    return re.sub(rf"-{expected}(\.[A-Za-z0-9]+)$", rf"-{digest[:len(expected)]}\1", file_name)


@dataclass
class WrittenFile:
    path: Path
    state: dict[str, Tensor]  # the file's state dict as written (unwrapped)
    names: dict[str, Tensor] = field(repr=False)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Callable[[str], WrittenFile]:
    """``url -> WrittenFile``: the format's file for the model of the first recipe naming
    ``url``, written once."""
    folder = tmp_path_factory.mktemp("init_weights")

    @functools.lru_cache(maxsize=None)
    def write(url: str) -> WrittenFile:
        fmt = FORMATS[URL_FORMATS[url]]
        ours = build(recipe_for_url(url), "meta").backbone.state_dict()
        names = fmt.names(ours)
        gen = torch.Generator().manual_seed(int(hashlib.sha256(url.encode()).hexdigest()[:8], 16))
        state = {k: _random_like(v, gen) for k, v in names.items()}
        scratch = folder / "writing.tmp"
        torch.save(fmt.container(state), scratch)
        data = scratch.read_bytes()
        path = folder / saved_name(url_file_name(url), data)
        check_name_hash(path.name, hashlib.sha256(data).hexdigest())
        scratch.rename(path)
        return WrittenFile(path, state, names)

    return write


@dataclass
class Loaded:
    report: object
    device: str
    tensors: dict[str, Tensor]  # our backbone's tensors after the load, for the spot keys
    backbone_keys: list[str]


@pytest.fixture(scope="module")
def loaded(weights_file) -> Callable[[str], Loaded]:
    """``recipe -> Loaded``: the recipe's file loaded into its model, once per distinct model
    and file (the model is not kept, only the report and the spot-checked tensors)."""

    @functools.lru_cache(maxsize=None)
    def load(key: str, url: str) -> Loaded:
        relative = next(p for p in ALL_RECIPES
                        if model_key(p) == key and recipe(p).model.init_checkpoint == url)
        fmt = FORMATS[URL_FORMATS[url]]
        meta = build(relative, "meta")
        small = sum(p.numel() for p in meta.parameters()) < CPU_PARAMETERS
        device = "cpu" if small else "meta"
        model = build(relative, "cpu") if small else meta
        report = load_pretrained(model, str(weights_file(url).path))
        own = model.backbone.state_dict()
        wanted = [k for k in (fmt.to_ours(s) for s in fmt.spot) if k in own]
        wanted += [k for k in ("pos_embed",) if k in own]
        tensors = {k: own[k].detach().clone() for k in wanted}
        return Loaded(report, device, tensors, list(own))

    return lambda relative: load(model_key(relative), recipe(relative).model.init_checkpoint)


# --- the generators write the reference names ---------------------------------------------------


def test_every_zoo_url_has_a_format_and_every_format_is_used():
    urls = {recipe(p).model.init_checkpoint for p in ALL_RECIPES} - {None}
    assert urls == set(URL_FORMATS), "a recipe names a URL without a format generator (or a " \
        f"format entry is stale): {sorted(urls ^ set(URL_FORMATS))}"
    assert set(URL_FORMATS.values()) == set(FORMATS)
    assert FROM_SCRATCH <= set(ALL_RECIPES)


# Names and shapes read by hand from the reference files (see the module docstring), checked in
# the generated files: {url: {file key: shape}}.
HAND_CHECKED = {
    f"{_MMLAB}/pretrain/third_party/hrnetv2_w18-00eb2006.pth": {  # cls_hrnet.py, W18
        "conv1.weight": (64, 3, 3, 3), "layer1.3.conv3.weight": (256, 64, 1, 1),
        "transition1.0.0.weight": (18, 256, 3, 3), "transition1.1.0.0.weight": (36, 256, 3, 3),
        "stage2.0.fuse_layers.0.1.0.weight": (18, 36, 1, 1),
        "stage4.2.fuse_layers.3.2.0.1.running_var": (144,),
        "incre_modules.0.0.conv1.weight": (32, 18, 1, 1),
        "incre_modules.3.0.downsample.1.running_var": (1024,),
        "downsamp_modules.2.0.weight": (1024, 512, 3, 3), "final_layer.0.bias": (2048,),
        "classifier.weight": (1000, 2048)},
    f"{_HRNET_CLS}/HRNet_W48_C_ssld_pretrained.pth": {
        "stage4.2.branches.3.3.conv2.weight": (384, 384, 3, 3),
        "incre_modules.3.0.conv1.weight": (256, 384, 1, 1), "classifier.bias": (1000,)},
    f"{_TIMM}/v0.1-hrnet/hrnet_w18_small_v1-f460c6bc.pth": {  # timm hrnet_w18_small (v1)
        "layer1.0.conv1.weight": (32, 64, 1, 1), "layer1.0.downsample.0.weight": (128, 64, 1, 1),
        "transition1.0.0.weight": (16, 128, 3, 3),
        "stage4.0.branches.3.1.conv1.weight": (128, 128, 3, 3),
        "incre_modules.0.0.conv1.weight": (32, 16, 1, 1),
        "downsamp_modules.0.1.num_batches_tracked": (), "final_layer.1.running_mean": (2048,)},
    f"{_MMLAB}/pretrain/third_party/resnet50_v1c-2cccc1ad.pth": {
        "stem.0.weight": (32, 3, 3, 3), "stem.6.weight": (64, 32, 3, 3),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1), "layer4.2.conv3.weight": (2048, 512, 1, 1),
        "fc.weight": (1000, 2048)},
    f"{_MMLAB}/pretrain/third_party/resnest101_d2-f3b931b2.pth": {
        "stem.0.weight": (64, 3, 3, 3), "layer1.0.conv2.conv.weight": (128, 32, 3, 3),
        "layer1.0.conv2.fc1.weight": (32, 64, 1, 1), "layer3.22.conv3.weight": (1024, 256, 1, 1)},
    f"{_MIT}/mit_b0_20220624-7e0fe6dd.pth": {  # mit2mmseg.py output for MiT-B0
        "layers.0.0.projection.weight": (32, 3, 7, 7),
        "layers.0.1.0.attn.attn.in_proj_weight": (96, 32),
        "layers.0.1.0.attn.sr.weight": (32, 32, 8, 8),
        "layers.0.1.0.ffn.layers.0.weight": (128, 32, 1, 1), "layers.3.2.weight": (256,)},
    f"{_INTERNIMAGE}/internimage_t_1k_224.pth": {  # intern_image.py, T: channels 64
        "patch_embed.conv1.weight": (32, 3, 3, 3), "levels.0.blocks.0.dcn.offset.weight": (72, 64),
        "levels.3.norm.0.weight": (512,), "conv_head.0.weight": (768, 512, 1, 1),
        "conv_head.1.0.running_var": (768,), "head.weight": (1000, 768)},
    f"{_INTERNIMAGE}/internimage_h_jointto22k_384.pth": {  # intern_image.py, H: channels 320
        "levels.2.post_norms.0.0.weight": (1280,), "dcnv3_head_x4.0.weight": (4096, 2560, 1, 1),
        "dcnv3_head_x3.weight": (1024, 1280, 1, 1), "clip_projector.norm1_q.0.weight": (1024,),
        "clip_projector.cross_dcn.q_bias": (1024,),
        "clip_projector.cross_dcn.proj.weight": (768, 1024),
        "fc_norm.0.bias": (768,), "head.weight": (1000, 768)},
    f"{_TIMM}/v0.1-vitjx/jx_vit_large_p16_384-b3be5167.pth": {  # vit_large_patch16_384
        "cls_token": (1, 1, 1024), "pos_embed": (1, 577, 1024),
        "patch_embed.proj.weight": (1024, 3, 16, 16), "blocks.0.norm1.weight": (1024,),
        "blocks.0.attn.qkv.weight": (3072, 1024), "blocks.0.attn.qkv.bias": (3072,),
        "blocks.23.attn.proj.weight": (1024, 1024), "blocks.23.mlp.fc1.weight": (4096, 1024),
        "blocks.23.mlp.fc2.bias": (1024,), "norm.bias": (1024,), "head.weight": (1000, 1024)},
}


@pytest.mark.parametrize("url", sorted(HAND_CHECKED), ids=url_file_name)
def test_generated_files_carry_the_reference_names(url, weights_file):
    written = weights_file(url)
    for key, shape in HAND_CHECKED[url].items():
        assert key in written.names, f"{key} not generated for {url_file_name(url)}"
        assert tuple(written.names[key].shape) == shape, key
    stored = torch.load(written.path, map_location="cpu", weights_only=True)
    if FORMATS[URL_FORMATS[url]].container is not dict:
        stored = stored["model"]
    assert stored.keys() == written.state.keys()
    assert written.path.stat().st_size < 40_000_000  # small storages, even for InternImage-H


# --- every recipe ------------------------------------------------------------------------------


def one_per_format_fast(relatives: list[str]) -> list:
    """``relatives`` as parameters: the first recipe (by name) of each weights format stays
    in the fast tier, the others are marked ``slow`` (each builds and fills a full-size
    backbone on the CPU; CI runs them all)."""
    seen: set[str | None] = set()
    params = []
    for relative in relatives:
        url = recipe(relative).model.init_checkpoint
        fmt = URL_FORMATS.get(url, url) if url else None
        params.append(pytest.param(relative, marks=[pytest.mark.slow] if fmt in seen else []))
        seen.add(fmt)
    return params


@pytest.mark.parametrize("relative", one_per_format_fast(ALL_RECIPES))
def test_recipe_init_checkpoint_loads_strictly(relative, weights_file, loaded):
    url = recipe(relative).model.init_checkpoint
    if url is None:
        assert relative in FROM_SCRATCH, f"{relative} names no model.init_checkpoint"
        return
    assert url in URL_FORMATS, f"{relative}: no format generator for {url}"
    fmt = FORMATS[URL_FORMATS[url]]
    written = weights_file(url)
    result = loaded(relative)
    report = result.report

    assert (report.kind, report.target) == (fmt.kind, "backbone"), report.summary()
    assert report.missing == [], report.summary()
    assert report.strict == (fmt.kind != "backbone")
    assert sorted(report.unexpected) == sorted(fmt.unexpected)
    mapped = {fmt.to_ours(k) for k in written.state} - {None}
    dropped = sorted(k for k in written.state if fmt.to_ours(k) is None
                     and k not in fmt.unexpected)
    assert report.dropped == dropped
    fresh = [k for k in result.backbone_keys if fmt.fresh_prefix and k.startswith(fmt.fresh_prefix)]
    assert report.fresh == fresh
    # every backbone key is filled from the file (or documented as target-only, or a BN
    # counter the format lacks)
    added = set(result.backbone_keys) - mapped - set(fresh)
    assert all(k.endswith(".num_batches_tracked") for k in added) and (bool(added)
                                                                       == fmt.counters_added)
    assert mapped <= set(result.backbone_keys)

    for theirs in fmt.spot:
        ours = fmt.to_ours(theirs)
        if ours not in result.tensors:
            continue
        value = result.tensors[ours]
        if theirs in written.state:
            assert torch.equal(value, written.state[theirs].to(value.dtype)), (relative, theirs)
        else:  # a BN counter the format lacks: added as 0
            assert fmt.counters_added and int(value) == 0, (relative, theirs)
    if "pos_embed" in result.tensors:
        assert torch.equal(result.tensors["pos_embed"], _ssseg_resized(written.state["pos_embed"],
                                                                        (32, 32)))


def _ssseg_resized(pos_embed: Tensor, grid: tuple[int, int]) -> Tensor:
    """sssegmentation ``VisionTransformer.resizeposembed`` (bilinear, align_corners False, the
    class-token entry kept) from the file's square grid to ``grid``."""
    side = int((pos_embed.shape[1] - 1) ** 0.5)
    cls_weight, weight = pos_embed[:, :1], pos_embed[:, -side * side:]
    weight = weight.reshape(1, side, side, pos_embed.shape[2]).permute(0, 3, 1, 2)
    weight = F.interpolate(weight, size=grid, align_corners=False, mode="bilinear")
    return torch.cat((cls_weight, torch.flatten(weight, 2).transpose(1, 2)), dim=1)


def test_small_models_load_on_the_cpu_and_large_ones_on_meta(loaded):
    assert loaded("cityscapes/fcn_hrnetv2_w18_small_v1_1024x1024_180e_ema.yaml").device == "cpu"
    assert loaded("ade20k/upernet_internimage_h_896x896_160k.yaml").device == "meta"
    assert loaded("ade20k/deeplabv3_mcibi_vit_large_512x512_130e.yaml").device == "meta"


# --- what strictness refuses ---------------------------------------------------------------------


VIT_URL = f"{_TIMM}/v0.1-vitjx/jx_vit_large_p16_384-b3be5167.pth"
R50_URL = f"{_MMLAB}/pretrain/third_party/resnet50_v1c-2cccc1ad.pth"
HRNET_V1_URL = f"{_TIMM}/v0.1-hrnet/hrnet_w18_small_v1-f460c6bc.pth"


def test_a_timm_vit_file_read_as_a_plain_backbone_is_refused_not_half_loaded(weights_file):
    model = build(recipe_for_url(VIT_URL), "meta")
    state = weights_file(VIT_URL).state
    with pytest.raises(ValueError, match=r"jx_vit.*\(backbone\) does not fit the backbone: .*"
                                         r"keys are missing .*layers\.0\.ln1\.weight"):
        load_pretrained(model, dict(state), kind="backbone", source="jx_vit_large_p16_384.pth")


def test_a_missing_block_names_the_file_and_the_keys(weights_file):
    model = build(recipe_for_url(VIT_URL), "meta")
    state = {k: v for k, v in weights_file(VIT_URL).state.items() if not k.startswith("blocks.7.")}
    with pytest.raises(ValueError, match=r"vit\.pth \(timm_vit\) does not fit the backbone: "
                                         r"12 of the backbone's \d+ keys are missing.*"
                                         r"layers\.7\.ln1\.weight"):
        load_pretrained(model, state, source="vit.pth")


def test_unknown_formats_must_fill_the_backbone_too(weights_file):
    model = build(recipe_for_url(R50_URL), "meta")
    state = {k: v for k, v in weights_file(R50_URL).state.items() if not k.startswith("layer4.")}
    with pytest.raises(ValueError, match=r"r50\.pth \(backbone\) does not fit the backbone: "
                                         r"\d+ of the backbone's \d+ keys are missing"):
        load_pretrained(model, state, source="r50.pth")


def test_known_formats_refuse_keys_left_over(weights_file):
    model = build(recipe_for_url(HRNET_V1_URL), "meta")
    state = {**weights_file(HRNET_V1_URL).state, "stage5.0.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"stage5\.0\.weight"):
        load_pretrained(model, state, source="v1.pth")


# --- over HTTP, through the CLI ------------------------------------------------------------------


@pytest.mark.parametrize("relative, kind", [
    ("cityscapes/fcn_hrnetv2_w18_small_v1_1024x1024_180e_ema.yaml", "hrnet_official"),
    ("ade20k/deeplabv3_mcibi_r50_512x512_130e.yaml", "backbone"),
])
def test_weights_fetch_of_zoo_recipes_checks_the_load(relative, kind, segctl_env, range_server,
                                                      weights_file):
    """``segctl weights fetch`` of a copy of the zoo recipe whose init URL points at the local
    server (``reference.checkpoint`` and ``reference.log``, fetched too, left out)."""
    import shutil

    from typer.testing import CliRunner

    from segctl.cli import app

    written = weights_file(recipe(relative).model.init_checkpoint)
    shutil.copy(written.path, range_server.root / written.path.name)
    data = yaml.safe_load((RECIPES / relative).read_text())
    data["model"]["init_checkpoint"] = f"{range_server.url}/{written.path.name}"
    for field in ("checkpoint", "log"):  # the published model and training log: not here
        (data.get("reference") or {}).pop(field, None)
    copy = segctl_env / Path(relative).name
    copy.write_text(yaml.safe_dump(data, sort_keys=False))

    result = CliRunner().invoke(app, ["weights", "fetch", "--quiet", str(copy)])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if "model.init_checkpoint" in line)
    assert f"{written.path.name} ({kind}) into the backbone" in line, line
    assert "missing" not in line and "downloaded" in line
    assert range_server.requests(written.path.name), range_server.log_text()
