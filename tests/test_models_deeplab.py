"""DeepLabV3 backbones/heads and the MCIBI memory (trainer.models.{resnet,aspp_head,vit,mcibi,
deeplab_zoo}). Big models are built on the meta device; forward passes use small inputs."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from trainer.models.aspp_head import ASPPHead
from trainer.models.deeplab_zoo import BUILDERS, MCIBI_REFERENCE_OPTIONS, PARAMETER_COUNTS
from trainer.models.fcn_head import FCNHead
from trainer.models.losses import segmentation_loss
from trainer.models.mcibi import (
    FeaturesMemory,
    MCIBISegmentor,
    MemoryNetHead,
    convert_sssegmentation_state_dict,
    memory_classification_loss,
)
from trainer.models.resnet import ResNeSt, ResNetV1c
from trainer.models.vit import VisionTransformer, convert_timm_vit, resize_pos_embed


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- parameter counts --------------------------------------------------------------------------


def conv_params(cin: int, cout: int, k: int = 1, bias: bool = False) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def bn_params(c: int) -> int:
    return 2 * c


def resnet_v1c_params(depth: int) -> int:
    """ResNetV1c from layer arithmetic (He et al. 2016 Table 1 blocks; deep stem 32/32/64)."""
    blocks = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth]
    total = (
        conv_params(3, 32, 3) + bn_params(32) + conv_params(32, 32, 3) + bn_params(32)
        + conv_params(32, 64, 3) + bn_params(64)
    )
    inplanes = 64
    for i, n in enumerate(blocks):
        planes = 64 * 2**i
        for b in range(n):
            cin = inplanes if b == 0 else 4 * planes
            total += conv_params(cin, planes) + bn_params(planes)
            total += conv_params(planes, planes, 3) + bn_params(planes)
            total += conv_params(planes, 4 * planes) + bn_params(4 * planes)
            if b == 0:  # projection shortcut
                total += conv_params(cin, 4 * planes) + bn_params(4 * planes)
        inplanes = 4 * planes
    return total


def deeplabv3_head_params(num_classes: int) -> int:
    """mmseg ASPPHead (2048 -> 512, rates 1/12/24/36) + FCN aux (1024 -> 256), by arithmetic."""
    aspp = conv_params(2048, 512) + bn_params(512)  # image_pool
    aspp += conv_params(2048, 512) + bn_params(512)  # dilation 1 (1x1)
    aspp += 3 * (conv_params(2048, 512, 3) + bn_params(512))  # dilations 12, 24, 36
    aspp += conv_params(5 * 512, 512, 3) + bn_params(512)  # bottleneck
    aspp += conv_params(512, num_classes, bias=True)  # conv_seg
    aux = conv_params(1024, 256, 3) + bn_params(256) + conv_params(256, num_classes, bias=True)
    return aspp + aux


def test_resnet_v1c_backbone_parameter_counts():
    # Independent cross-check: torchvision's ResNet-50/101 (25,557,032 / 44,549,160 parameters
    # with the 2,049,000-parameter fc) differ from V1c only in the stem, 7x7 conv + BN
    # (9,536) -> three 3x3 conv + BN (28,768): +19,232.
    with torch.device("meta"):
        r50, r101 = ResNetV1c(50), ResNetV1c(101)
    assert count(r50) == resnet_v1c_params(50) == 25_557_032 - 2_049_000 + 19_232 == 23_527_264
    assert count(r101) == resnet_v1c_params(101) == 44_549_160 - 2_049_000 + 19_232
    assert count(r101) == 42_519_392


@pytest.mark.parametrize(
    "name, depth, published_m", [("deeplabv3_r50", 50, 68.1), ("deeplabv3_r101", 101, 87.1)]
)
def test_deeplabv3_totals_match_layer_arithmetic_and_mmseg_sizes(name, depth, published_m):
    # Published sizes: mmseg's DeepLabV3 R-50-D8 68.1M and R-101-D8 87.1M (Cityscapes, 19
    # classes; figures given with the task, not found in the searched mmseg docs).
    with torch.device("meta"):
        model = BUILDERS[name](19)
    expected = resnet_v1c_params(depth) + deeplabv3_head_params(19)
    assert count(model) == expected == PARAMETER_COUNTS[(name, 19)]
    assert round(expected / 1e6, 1) == published_m


def test_resnest101_backbone_count():
    # Official ResNeSt-101 has 48,275,016 parameters with its 2,049,000-parameter classifier.
    with torch.device("meta"):
        assert count(ResNeSt(101)) == 48_275_016 - 2_049_000


@pytest.mark.slow
def test_every_builder_on_meta_device_matches_recorded_counts():
    assert set(BUILDERS) == {
        f"deeplabv3_{s}{b}"
        for s in ("", "mcibi_")
        for b in ("r50", "r101", "resnest101", "hrnetv2_w48", "vit_large")
    }
    for name, builder in BUILDERS.items():
        for num_classes in (19, 150):
            with torch.device("meta"):
                model = builder(num_classes)
            assert count(model) == PARAMETER_COUNTS[(name, num_classes)], name
            assert all(p.is_meta for p in model.parameters())


@pytest.mark.slow
def test_mcibi_reference_options_build():
    for (backbone, _dataset), opts in MCIBI_REFERENCE_OPTIONS.items():
        with torch.device("meta"):
            model = BUILDERS[f"deeplabv3_mcibi_{backbone}"](19, **opts)
        assert isinstance(model, MCIBISegmentor)
        assert model.use_memory_loss == opts["use_memory_loss"]
        if opts.get("downsample_backbone"):
            assert hasattr(model, "downsample_backbone")


def test_mcibi_hrnet_stem_and_vit_dropout_follow_sssegmentation():
    """MCIBI HRNetV2-W48: no ReLU after the stem's bn1 (sssegmentation's hrnet.py before
    4602275d; mcibi_version=True since 85efec48); plain DeepLabV3 keeps mmseg's stem. MCIBI
    ViT-L: backbone drop_rate 0.0 (mcibi_deeplabv3_vitlarge_*.py since c99d1e5c)."""
    with torch.device("meta"):
        mcibi_hrnet = BUILDERS["deeplabv3_mcibi_hrnetv2_w48"](19)
        plain_hrnet = BUILDERS["deeplabv3_hrnetv2_w48"](19)
        with_relu = BUILDERS["deeplabv3_mcibi_hrnetv2_w48"](19, stem_relu=True)
        vit = BUILDERS["deeplabv3_mcibi_vit_large"](19)
        vit_01 = BUILDERS["deeplabv3_mcibi_vit_large"](19, backbone_drop_rate=0.1)
    assert (mcibi_hrnet.backbone.stem_relu, with_relu.backbone.stem_relu) == (False, True)
    assert plain_hrnet.backbone.stem_relu is True
    assert count(mcibi_hrnet) == count(with_relu)

    def drops(model):
        return {m.p for m in model.backbone.modules() if isinstance(m, nn.Dropout)}

    assert drops(vit) <= {0.0} and drops(vit_01) == {0.1}


def test_loss_weights():
    with torch.device("meta"):
        plain = BUILDERS["deeplabv3_r50"](19)
        mcibi = BUILDERS["deeplabv3_mcibi_r50"](19)
        vit = BUILDERS["deeplabv3_mcibi_vit_large"](19)
    assert plain.loss_weights == {"aux": 0.4}
    assert mcibi.loss_weights == {"stage1": 0.4, "aux": 0.4}
    assert vit.loss_weights == {"stage1": 0.4, "aux0": 0.4, "aux1": 0.4, "aux2": 0.4}
    assert mcibi.memory_loss_weight == vit.memory_loss_weight == 1.0


# --- backbones ---------------------------------------------------------------------------------


def test_resnet_v1c_output_stride_8_and_names():
    torch.manual_seed(0)
    net = ResNetV1c(50).eval()
    with torch.no_grad():
        outs = net(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [
        (1, 256, 16, 16), (1, 512, 8, 8), (1, 1024, 8, 8), (1, 2048, 8, 8)
    ]
    # V1c: stride in the 3x3 conv; contract_dilation halves the first block's dilation.
    assert net.layer2[0].conv2.stride == (2, 2) and net.layer2[0].conv1.stride == (1, 1)
    assert net.layer3[0].conv2.dilation == (1, 1) and net.layer3[1].conv2.dilation == (2, 2)
    assert net.layer4[0].conv2.dilation == (2, 2) and net.layer4[2].conv2.dilation == (4, 4)
    keys = set(net.state_dict())
    for i in (0, 1, 3, 4, 6, 7):
        assert f"stem.{i}.weight" in keys
    assert {"layer1.0.downsample.0.weight", "layer1.0.downsample.1.running_var",
            "layer4.2.bn3.weight"} <= keys


def test_resnest_output_stride_8_and_names():
    torch.manual_seed(0)
    net = ResNeSt(50).eval()  # same blocks as ResNeSt-101, fewer of them
    with torch.no_grad():
        outs = net(torch.randn(1, 3, 64, 64))
    assert [o.shape[1:] for o in outs] == [
        (256, 16, 16), (512, 8, 8), (1024, 8, 8), (2048, 8, 8)
    ]
    keys = set(net.state_dict())
    assert {"stem.6.weight", "layer2.0.conv2.conv.weight", "layer2.0.conv2.bn0.weight",
            "layer2.0.conv2.fc1.bias", "layer2.0.conv2.bn1.weight", "layer2.0.conv2.fc2.weight",
            "layer2.0.downsample.1.weight", "layer2.0.downsample.2.weight"} <= keys
    assert net.stem[6].out_channels == 128
    assert net.layer4[1].conv2.conv.dilation == (4, 4)


# --- ASPP --------------------------------------------------------------------------------------


def test_aspp_branch_dilations_and_shapes():
    head = ASPPHead(16, 8, 5, in_index=-1)
    kernels = [b.conv.kernel_size for b in head.aspp_modules]
    dilations = [b.conv.dilation for b in head.aspp_modules]
    paddings = [b.conv.padding for b in head.aspp_modules]
    assert kernels == [(1, 1), (3, 3), (3, 3), (3, 3)]
    assert dilations == [(1, 1), (12, 12), (24, 24), (36, 36)]
    assert paddings == [(0, 0), (12, 12), (24, 24), (36, 36)]
    assert head.bottleneck.conv.in_channels == 5 * 8
    assert {"image_pool.1.conv.weight", "aspp_modules.3.bn.weight", "bottleneck.conv.weight",
            "conv_seg.bias"} <= set(head.state_dict())
    head.train()
    logits = head([torch.randn(2, 4, 9, 9), torch.randn(2, 16, 9, 9)])
    assert logits.shape == (2, 5, 9, 9)


# --- ViT ---------------------------------------------------------------------------------------


def small_vit(**kw) -> VisionTransformer:
    return VisionTransformer(
        img_size=32, patch_size=8, embed_dims=32, num_layers=4, num_heads=2,
        out_indices=(1, 3), **kw,
    )


def test_vit_names_and_tap_shapes_on_another_grid():
    torch.manual_seed(0)
    vit = small_vit(tap_norms=True, final_norm=True).eval()
    keys = set(vit.state_dict())
    assert {"patch_embed.projection.weight", "cls_token", "pos_embed", "layers.0.ln1.weight",
            "layers.0.attn.attn.in_proj_weight", "layers.0.attn.attn.out_proj.weight",
            "layers.0.ln2.bias", "layers.0.ffn.layers.0.0.weight", "layers.0.ffn.layers.1.weight",
            "ln1.weight", "norm_layers.1.weight"} <= keys
    assert vit.pos_embed.shape == (1, 4 * 4 + 1, 32)
    with torch.no_grad():
        outs = vit(torch.randn(2, 3, 48, 36))  # grid 6 x 5 (36 padded to 40)
    assert [tuple(o.shape) for o in outs] == [(2, 32, 6, 5), (2, 32, 6, 5)]


def test_pos_embed_resize():
    torch.manual_seed(0)
    pos = torch.randn(1, 1 + 4 * 4, 8)
    same = resize_pos_embed(pos, (4, 4), (4, 4), "bicubic")
    assert torch.allclose(same, pos, atol=1e-5)
    const = torch.cat([torch.full((1, 1, 8), 7.0), torch.full((1, 16, 8), 2.5)], dim=1)
    out = resize_pos_embed(const, (6, 3), (4, 4), "bicubic")
    assert out.shape == (1, 1 + 18, 8)
    assert torch.equal(out[:, 0], const[:, 0])  # class-token entry untouched
    assert torch.allclose(out[:, 1:], torch.full((1, 18, 8), 2.5), atol=1e-5)
    # Grid layout: row-major (h, w); a ramp along w stays a ramp along w.
    ramp = torch.arange(4.0).repeat(4).reshape(1, 16, 1)
    ramp = torch.cat([torch.zeros(1, 1, 1), ramp], dim=1)
    up = resize_pos_embed(ramp, (4, 8), (4, 4), "bilinear")[0, 1:, 0].reshape(4, 8)
    assert torch.allclose(up[0], up[3]) and bool((up[0][1:] >= up[0][:-1]).all())
    vit = small_vit()
    assert vit.position_embedding((4, 4)) is vit.pos_embed
    assert vit.position_embedding((5, 2)).shape == (1, 11, 32)


def test_convert_timm_vit_names_and_grid():
    vit = small_vit(final_norm=True)
    timm_state = {
        "cls_token": torch.zeros(1, 1, 32),
        "pos_embed": torch.zeros(1, 1 + 9, 32),
        "patch_embed.proj.weight": torch.zeros(32, 3, 8, 8),
        "blocks.0.norm1.weight": torch.zeros(32),
        "blocks.0.attn.qkv.weight": torch.zeros(96, 32),
        "blocks.0.attn.proj.bias": torch.zeros(32),
        "blocks.0.mlp.fc1.weight": torch.zeros(128, 32),
        "blocks.0.mlp.fc2.weight": torch.zeros(32, 128),
        "norm.weight": torch.zeros(32),
        "head.weight": torch.zeros(10, 32),
    }
    out = convert_timm_vit(timm_state, vit)
    assert set(out) == {
        "cls_token", "pos_embed", "patch_embed.projection.weight", "layers.0.ln1.weight",
        "layers.0.attn.attn.in_proj_weight", "layers.0.attn.attn.out_proj.bias",
        "layers.0.ffn.layers.0.0.weight", "layers.0.ffn.layers.1.weight", "ln1.weight",
    }
    assert out["pos_embed"].shape == vit.pos_embed.shape
    assert set(out) <= set(vit.state_dict())


# --- MCIBI memory --------------------------------------------------------------------------------


def tiny_memory(num_classes: int = 3, channels: int = 2) -> FeaturesMemory:
    return FeaturesMemory(num_classes, channels, 4, channels, use_context_within_image=False)


def test_memory_update_matches_formula_on_hand_example():
    mem = tiny_memory()
    mem.memory[0, 0] = torch.tensor([1.0, 0.0])
    mem.memory[2, 0] = torch.tensor([0.5, 0.5])
    # One image, 1 x 4 pixels: class 0 at (0,1) and (1,1), class 1 at (3,4), one ignored.
    feats = torch.tensor([[[[0.0, 1.0, 3.0, 9.0]], [[1.0, 1.0, 4.0, 9.0]]]])  # (1, 2, 1, 4)
    labels = torch.tensor([[[0, 0, 1, 255]]])
    momentum = 0.45
    mem.update(feats, labels, momentum)

    s1, s2 = 0.0, 1 / math.sqrt(2)  # cos((0,1),(1,0)), cos((1,1),(1,0))
    w1, w2 = (1 - s1) / (2 - s1 - s2), (1 - s2) / (2 - s1 - s2)
    combined = w1 * torch.tensor([0.0, 1.0]) + w2 * torch.tensor([1.0, 1.0])
    expected0 = (1 - momentum) * torch.tensor([1.0, 0.0]) + momentum * combined
    assert torch.allclose(mem.memory[0, 0], expected0, atol=1e-6)
    assert torch.allclose(mem.memory[1, 0], torch.tensor([3.0, 4.0]))  # first sight: the mean
    assert torch.equal(mem.memory[2, 0], torch.tensor([0.5, 0.5]))  # absent class: unchanged


def test_memory_update_mean_strategy_and_resize():
    mem = tiny_memory()
    mem.memory[1, 0] = torch.tensor([2.0, 2.0])
    feats = torch.full((1, 2, 2, 2), 4.0)  # constant map: resizing keeps the values
    labels = torch.ones(1, 4, 4, dtype=torch.long)
    mem.update(feats, labels, 0.25, strategy="mean")
    assert torch.allclose(mem.memory[1, 0], torch.tensor([2.5, 2.5]))


def test_memory_momentum_follows_learning_rate():
    head = MemoryNetHead(8, 3, feats_channels=4, transform_channels=2, out_channels=4,
                         context_dilations=None)
    seg = MCIBISegmentor(nn.Identity(), head, momentum_base_lr=0.01, base_momentum=0.9)
    assert seg.memory_momentum(0.01) == pytest.approx(0.9)
    assert seg.memory_momentum(0.005) == pytest.approx(0.45)
    with pytest.raises(ValueError, match="learning rate"):
        seg.memory_momentum(None)


class _TinyBackbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.low = nn.Conv2d(3, 8, 3, stride=8, padding=1)
        self.high = nn.Conv2d(3, 16, 3, stride=8, padding=1)

    def forward(self, x):
        low = self.low(x)
        return [low, low, low, self.high(x)]


def tiny_mcibi(**kw) -> MCIBISegmentor:
    torch.manual_seed(0)
    head = MemoryNetHead(16, 5, feats_channels=8, transform_channels=4, out_channels=8,
                         context_dilations=(1, 2))
    aux = FCNHead(8, 8, 5, num_convs=1, concat_input=False, in_index=2)
    return MCIBISegmentor(_TinyBackbone(), head, aux,
                          loss_weights={"stage1": 0.4, "aux": 0.4}, **kw)


def test_mcibi_forward_training_updates_memory_and_readout_shapes():
    model = tiny_mcibi().train()
    images = torch.randn(2, 3, 32, 32)
    labels = torch.randint(0, 5, (2, 32, 32))
    out = model(images, labels, lr=0.01, epoch=1)
    assert set(out) == {"decode", "stage1", "aux"}
    assert out["decode"].shape == out["stage1"].shape == (2, 5, 4, 4)
    memory = model.decode_head.memory_module.memory
    assert memory.shape == (5, 1, 8) and bool((memory != 0).any(dim=-1).all())
    readout = model.decode_head.memory_module.read(out["stage1"])
    assert len(readout) == 1 and readout[0].shape == (2, 8, 4, 4)

    out = model(images, labels, lr=0.005, epoch=2)
    assert out["memory"].shape == (5, 5)
    # The engine's contract: pop "memory", per-pixel losses on the rest, add the memory loss.
    memory_logits = out.pop("memory")
    loss, _ = segmentation_loss(out, labels, weights=model.loss_weights, avg_non_ignore=True)
    loss = loss + model.memory_loss_weight * memory_classification_loss(memory_logits)
    loss.backward()  # the in-place memory update must not break autograd
    assert model.decode_head.decoder_stage2[4].weight.grad is not None
    assert "decode_head.memory_module.memory" in model.state_dict()
    assert "decode_head.memory_module.memory" not in dict(model.named_parameters())


def test_mcibi_no_update_in_eval_or_without_labels():
    model = tiny_mcibi()
    images = torch.randn(2, 3, 32, 32)
    labels = torch.randint(0, 5, (2, 32, 32))
    model.train()
    model(images)  # no labels: no update
    assert not model.decode_head.memory_module.memory.any()
    model.eval()
    with torch.no_grad():
        out = model(images, labels, lr=0.01, epoch=3)
        logits = model.encode_decode(images)
    assert set(out) == {"decode", "stage1", "aux"}
    assert logits.shape == (2, 5, 32, 32)
    assert not model.decode_head.memory_module.memory.any()
    model.train()
    with pytest.raises(ValueError, match="learning rate"):
        model(images, labels)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_data(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + rank)
    feats = torch.randn(1, 2, 4, 4, generator=gen)
    labels = torch.randint(0, 3, (1, 4, 4), generator=gen)
    return feats, labels


def _fresh_memory() -> FeaturesMemory:
    mem = tiny_memory()
    mem.memory.copy_(torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[0.0, 0.0]]]))
    return mem


def _allreduce_worker(rank: int, world: int, port: int, result_dir: str) -> None:
    # Expected: the mean over ranks of each rank's local update (computed without a group).
    local = []
    for r in range(world):
        mem = _fresh_memory()
        mem.update(*_rank_data(r), 0.9)
        local.append(mem.memory.clone())
    expected = torch.stack(local).mean(0)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        mem = _fresh_memory()
        mem.update(*_rank_data(rank), 0.9)
        torch.save({"got": mem.memory.clone(), "expected": expected},
                   os.path.join(result_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_memory_update_is_all_reduced_across_ranks(tmp_path):
    world = 2
    mp.spawn(_allreduce_worker, args=(world, _free_port(), str(tmp_path)), nprocs=world,
             join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    for res in results:
        assert torch.allclose(res["got"], res["expected"], atol=1e-6)
    assert torch.equal(results[0]["got"], results[1]["got"])
    # The two ranks saw different data, so the average differs from either local update.
    local0 = _fresh_memory()
    local0.update(*_rank_data(0), 0.9)
    assert not torch.allclose(local0.memory, results[0]["got"])


def test_memory_classification_loss_targets():
    logits = torch.full((6, 3), -10.0)
    for row in range(6):
        logits[row, row // 2] = 10.0
    assert memory_classification_loss(logits, num_feats_per_cls=2) < 1e-6
    assert memory_classification_loss(logits, num_feats_per_cls=2).ndim == 0
    with pytest.raises(ValueError):
        memory_classification_loss(logits, num_feats_per_cls=1)


def test_sssegmentation_key_mapping_covers_the_model():
    model = tiny_mcibi()
    ours = model.state_dict()
    # Build a reference-named state dict from ours by the inverse of the documented mapping.
    ref = {}
    for key, value in ours.items():
        if key.startswith("backbone."):
            ref["backbone_net." + key[len("backbone."):]] = value
        elif key.startswith("decode_head."):
            ref[key[len("decode_head."):]] = value
        elif key.startswith("auxiliary_head."):
            rest = key[len("auxiliary_head."):]
            for new, old in (("convs.0.conv.", "0."), ("convs.0.bn.", "1."), ("conv_seg.", "4.")):
                if rest.startswith(new):
                    ref["auxiliary_decoder." + old + rest[len(new):]] = value
    assert len(ref) == len(ours)
    converted = convert_sssegmentation_state_dict(ref)
    assert set(converted) == set(ours)
    model.load_state_dict(converted, strict=True)


def test_mcibi_vit_aux_heads_upsample():
    from trainer.models.mcibi import UpsampleAuxHead

    head = UpsampleAuxHead(8, 4, 3, in_index=1, num_convs=2, scale_factor=4)
    assert [type(m).__name__ for m in head] == [
        "Conv2d", "BatchNorm2d", "ReLU", "Upsample", "Conv2d", "BatchNorm2d", "ReLU",
        "Upsample", "Dropout2d", "Conv2d",
    ]
    out = head.eval()([torch.randn(1, 8, 2, 2), torch.randn(1, 8, 3, 2)])
    assert out.shape == (1, 3, 48, 32)
    assert F.softmax(out, 1).shape == out.shape
