"""SegFormer (MiT encoder + all-MLP head): sizes, mmseg parameter names, numerics, loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainer.models import MODEL_BUILDERS, build_segmentor, count_parameters
from trainer.models.losses import segmentation_loss
from trainer.models.mit import PackedAttention
from trainer.models.weights import load_segmentor_weights

# Encoder sizes of the published MiT variants (NVlabs/SegFormer; zoo README).
ENCODER_PARAMETERS = {
    "segformer_mit_b0": 3_319_392,
    "segformer_mit_b1": 13_151_424,
    "segformer_mit_b2": 24_196_288,
    "segformer_mit_b3": 44_072_128,
    "segformer_mit_b4": 60_842_688,
    "segformer_mit_b5": 81_443_008,
}


def _b0(num_classes: int = 19) -> nn.Module:
    torch.manual_seed(0)
    return build_segmentor("segformer_mit_b0", num_classes=num_classes)


@pytest.mark.parametrize("name", sorted(ENCODER_PARAMETERS))
def test_encoder_parameter_count(name: str) -> None:
    with torch.device("meta"):
        model = build_segmentor(name, num_classes=150)
    assert count_parameters(model.backbone) == ENCODER_PARAMETERS[name]


def test_b0_b1_totals_match_official_sizes() -> None:
    # Official B0 total with a 256-wide decoder and 150 classes: 3.753M (B1: 13.716M).
    with torch.device("meta"):
        b0 = build_segmentor("segformer_mit_b0", num_classes=150)
        b1 = build_segmentor("segformer_mit_b1", num_classes=150)
    assert count_parameters(b0) == 3_753_718
    assert count_parameters(b1) == 13_716_822


def _mmseg_b0_keys() -> set[str]:
    """Key set of an mmseg 1.x SegFormer-B0 checkpoint, written out from mmseg's module tree.

    backbones/mit.py: layers[i] = ModuleList([PatchEmbed(projection, norm),
    ModuleList(TransformerEncoderLayer(norm1, attn=EfficientMultiheadAttention(attn=
    nn.MultiheadAttention, sr, norm), norm2, ffn=MixFFN(layers=Sequential(conv, dwconv, act,
    drop, conv, drop)))), LayerNorm]); sr and its norm only where sr_ratio > 1.
    decode_heads/segformer_head.py: convs[i] and fusion_conv are ConvModule(conv, bn);
    decode_head.py adds conv_seg (dropout has no state).
    """
    wb = ("weight", "bias")
    bn = wb + ("running_mean", "running_var", "num_batches_tracked")
    keys = set()
    for i, sr_ratio in enumerate((8, 4, 2, 1)):
        stage = f"backbone.layers.{i}"
        keys |= {f"{stage}.0.{m}.{p}" for m in ("projection", "norm") for p in wb}
        keys |= {f"{stage}.2.{p}" for p in wb}
        for j in range(2):
            block = f"{stage}.1.{j}"
            mods = ["norm1", "norm2", "attn.attn.out_proj", "ffn.layers.0", "ffn.layers.1"]
            mods += ["ffn.layers.4"] + (["attn.sr", "attn.norm"] if sr_ratio > 1 else [])
            keys |= {f"{block}.{m}.{p}" for m in mods for p in wb}
            keys |= {f"{block}.attn.attn.in_proj_weight", f"{block}.attn.attn.in_proj_bias"}
    for m in [f"convs.{i}" for i in range(4)] + ["fusion_conv"]:
        keys |= {f"decode_head.{m}.conv.weight"} | {f"decode_head.{m}.bn.{p}" for p in bn}
    keys |= {f"decode_head.conv_seg.{p}" for p in wb}
    return keys


def test_b0_state_dict_matches_mmseg_layout() -> None:
    state = _b0(num_classes=19).state_dict()
    assert set(state) == _mmseg_b0_keys()

    # Counts per prefix: 3 stages x (4 embed + 2 norm + 2 blocks x 18) + (4 + 2 + 2 x 14).
    def count(prefix: str) -> int:
        return sum(k.startswith(prefix) for k in state)

    assert count("backbone.") == 160
    assert [count(f"backbone.layers.{i}.") for i in range(4)] == [42, 42, 42, 34]
    assert count("decode_head.") == 32
    assert count("decode_head.convs.") == 24

    expected_shapes = {
        "backbone.layers.0.0.projection.weight": (32, 3, 7, 7),
        "backbone.layers.1.0.projection.weight": (64, 32, 3, 3),
        "backbone.layers.0.1.0.attn.attn.in_proj_weight": (96, 32),
        "backbone.layers.0.1.0.attn.attn.in_proj_bias": (96,),
        "backbone.layers.0.1.0.attn.attn.out_proj.weight": (32, 32),
        "backbone.layers.0.1.0.attn.sr.weight": (32, 32, 8, 8),
        "backbone.layers.2.1.1.attn.sr.weight": (160, 160, 2, 2),
        "backbone.layers.0.1.0.ffn.layers.0.weight": (128, 32, 1, 1),
        "backbone.layers.0.1.0.ffn.layers.1.weight": (128, 1, 3, 3),
        "backbone.layers.0.1.0.ffn.layers.4.weight": (32, 128, 1, 1),
        "backbone.layers.3.2.weight": (256,),
        "decode_head.convs.3.conv.weight": (256, 256, 1, 1),
        "decode_head.fusion_conv.conv.weight": (256, 1024, 1, 1),
        "decode_head.conv_seg.weight": (19, 256, 1, 1),
        "decode_head.conv_seg.bias": (19,),
    }
    assert {k: tuple(state[k].shape) for k in expected_shapes} == expected_shapes


def test_layer_norm_eps_follows_mmseg() -> None:
    eps = {m.eps for m in _b0().modules() if isinstance(m, nn.LayerNorm)}
    assert eps == {1e-6}


def test_output_shapes() -> None:
    model = _b0(num_classes=7).eval()
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        feats = model.backbone(images)
        outputs = model(images)
        full = model.encode_decode(images)
    assert [tuple(f.shape) for f in feats] == [
        (2, 32, 16, 24),
        (2, 64, 8, 12),
        (2, 160, 4, 6),
        (2, 256, 2, 3),
    ]
    assert set(outputs) == {"decode"}
    assert outputs["decode"].shape == (2, 7, 16, 24)
    assert full.shape == (2, 7, 64, 96)


def test_odd_input_size_uses_conv_arithmetic() -> None:
    model = _b0(num_classes=3).eval()
    with torch.no_grad():
        feats = model.backbone(torch.randn(1, 3, 65, 33))
    assert [tuple(f.shape[2:]) for f in feats] == [(17, 9), (9, 5), (5, 3), (3, 2)]


def test_state_dict_round_trip_strict(tmp_path) -> None:
    source = _b0().eval()
    images = torch.randn(1, 3, 64, 96)
    path = tmp_path / "checkpoint.pth"
    torch.save({"meta": {"epoch": 1}, "state_dict": source.state_dict()}, path)

    torch.manual_seed(1)
    target = build_segmentor("segformer_mit_b0", num_classes=19).eval()
    assert load_segmentor_weights(target, path) == ([], [])
    with torch.no_grad():
        assert torch.equal(source(images)["decode"], target(images)["decode"])


def test_loader_unwraps_module_prefix_and_reports_bad_keys() -> None:
    source = _b0()
    wrapped = {"model": {f"module.{k}": v for k, v in source.state_dict().items()}}
    load_segmentor_weights(_b0(), wrapped)

    broken = dict(source.state_dict())
    broken["decode_head.extra.weight"] = broken.pop("decode_head.conv_seg.weight")
    with pytest.raises(ValueError, match="missing keys: decode_head.conv_seg.weight") as info:
        load_segmentor_weights(_b0(), broken)
    assert "unexpected keys: decode_head.extra.weight" in str(info.value)
    missing, unexpected = load_segmentor_weights(_b0(), broken, strict=False)
    assert missing == ["decode_head.conv_seg.weight"]
    assert unexpected == ["decode_head.extra.weight"]

    with pytest.raises(ValueError, match="shape mismatches: decode_head.conv_seg.weight"):
        load_segmentor_weights(_b0(num_classes=150), source.state_dict())


def test_sdpa_attention_equals_naive_packed_attention() -> None:
    torch.manual_seed(0)
    c, heads = 40, 5
    attn = PackedAttention(c, heads).eval()
    with torch.no_grad():
        attn.in_proj_bias.normal_()
        attn.out_proj.bias.normal_()
    query, key_value = torch.randn(2, 12, c), torch.randn(2, 6, c)

    w, b = attn.in_proj_weight, attn.in_proj_bias
    q = query @ w[:c].T + b[:c]
    k = key_value @ w[c : 2 * c].T + b[c : 2 * c]
    v = key_value @ w[2 * c :].T + b[2 * c :]

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(t.shape[0], t.shape[1], heads, c // heads).transpose(1, 2)

    d = c // heads
    weights = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(d), dim=-1)
    naive = (weights @ split(v)).transpose(1, 2).reshape(2, 12, c)
    naive = naive @ attn.out_proj.weight.T + attn.out_proj.bias

    with torch.no_grad():
        ours = attn(query, key_value)
        reference = nn.MultiheadAttention(c, heads, batch_first=True).eval()
        reference.load_state_dict(attn.state_dict())
        torch_mha = reference(query, key_value, key_value, need_weights=False)[0]
    torch.testing.assert_close(ours, naive.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours, torch_mha, rtol=1e-5, atol=1e-5)


def test_loss_ignores_255_and_matches_cross_entropy() -> None:
    logits = torch.tensor(
        [[[[2.0, 0.0], [0.5, -1.0]], [[0.0, 1.0], [0.5, 3.0]], [[-1.0, 0.0], [0.0, 0.0]]]],
        requires_grad=True,
    )  # (1, 3, 2, 2)
    labels = torch.tensor([[[0, 255], [2, 1]]])
    total, parts = segmentation_loss({"decode": logits}, labels)

    kept = [(0, 0, 0), (1, 0, 2), (1, 1, 1)]  # (row, col, class) of non-ignored pixels
    summed = sum(-torch.log_softmax(logits[0, :, r, c], 0)[k] for r, c, k in kept)
    # mmseg's default (avg_non_ignore=False): divide by all 4 pixels, the ignored one included.
    torch.testing.assert_close(total, summed / 4)
    assert set(parts) == {"decode"}
    non_ignore, _ = segmentation_loss({"decode": logits}, labels, avg_non_ignore=True)
    torch.testing.assert_close(non_ignore, summed / 3)
    torch.testing.assert_close(non_ignore, F.cross_entropy(logits, labels, ignore_index=255))

    total.backward()
    assert torch.all(logits.grad[0, :, 0, 1] == 0)  # the ignored pixel gets no gradient


def test_loss_upsamples_weights_heads_and_survives_all_ignore() -> None:
    torch.manual_seed(0)
    small = torch.randn(2, 4, 3, 5, requires_grad=True)
    labels = torch.randint(0, 4, (2, 12, 20))
    labels[0, :4] = 255
    total, parts = segmentation_loss(
        {"decode": small, "aux": small}, labels, weights={"aux": 0.4}, avg_non_ignore=True
    )
    up = F.interpolate(small, size=(12, 20), mode="bilinear", align_corners=False)
    expected = F.cross_entropy(up, labels, ignore_index=255)
    torch.testing.assert_close(parts["decode"], expected)
    torch.testing.assert_close(parts["aux"], 0.4 * expected)
    torch.testing.assert_close(total, 1.4 * expected)

    everything_ignored = torch.full((2, 12, 20), 255)
    total, _ = segmentation_loss({"decode": small}, everything_ignored)
    assert total.item() == 0.0
    total.backward()
    assert torch.isfinite(small.grad).all()

    with pytest.raises(ValueError, match="not among outputs"):
        segmentation_loss({"decode": small}, labels, weights={"auxx": 0.4})


def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(KeyError) as info:
        build_segmentor("segformer_mit_b9", num_classes=19)
    message = str(info.value)
    for name in MODEL_BUILDERS:
        assert name in message
    assert {f"segformer_mit_b{i}" for i in range(6)} <= set(MODEL_BUILDERS)


def test_auxiliary_heads_get_their_own_keys() -> None:
    from trainer.models import EncoderDecoder, MixVisionTransformer, SegformerHead

    torch.manual_seed(0)
    backbone = MixVisionTransformer()
    heads = [SegformerHead(num_classes=5), SegformerHead(num_classes=5)]
    model = EncoderDecoder(backbone, SegformerHead(num_classes=5), auxiliary_head=heads).eval()
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 32, 32))
    assert set(outputs) == {"decode", "aux0", "aux1"}
    assert any(k.startswith("auxiliary_head.1.conv_seg") for k in model.state_dict())
