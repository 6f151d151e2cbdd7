"""Foreign checkpoint formats through ``load_pretrained``: for each, a random state dict in that
format's naming (derived here from the documented key maps, /work/shared/zoo/README.md and the
reference repositories' module names), converted, loaded strictly, and the outputs compared
with the model the weights came from."""

from __future__ import annotations

import re

import fsspec
import pytest
import torch

from tests.trainer_runs import small_recipe
from trainer import checkpoint as ckpt
from trainer.models import build_segmentor
from trainer.models.converters.pretrained import detect_kind, load_pretrained


def _randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every floating-point tensor of the state dict (BN statistics included) made random."""
    gen = torch.Generator().manual_seed(seed)
    state = model.state_dict()
    for key, value in state.items():
        if value.dtype.is_floating_point:
            noise = torch.randn(value.shape, generator=gen) * 0.1
            if key.endswith("running_var"):
                noise = noise.abs() + 0.5
            state[key] = noise
    model.load_state_dict(state)
    return model.eval()


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        out_a, out_b = a(x), b(x)
    if isinstance(out_a, torch.Tensor):
        out_a, out_b = [out_a], [out_b]
    elif isinstance(out_a, dict):
        assert out_a.keys() == out_b.keys()
        out_a, out_b = list(out_a.values()), list(out_b.values())
    for p, q in zip(out_a, out_b):
        assert torch.equal(p, q)


# --- NVlabs SegFormer -----------------------------------------------------------------------------


def _to_nvlabs(mmseg_backbone: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The README's map read backwards: layers.{N-1}.0 -> patch_embedN (projection -> proj),
    layers.{N-1}.1.j -> blockN.j, in_proj split into q (first C rows) and kv, out_proj -> proj,
    ffn.layers.0/1/4 -> mlp.fc1 / mlp.dwconv.dwconv / mlp.fc2 (1x1 convs back to linear),
    layers.{N-1}.2 -> normN."""
    out = {}
    for key, value in mmseg_backbone.items():
        stage, part, rest = re.match(r"layers\.(\d)\.(\d)\.(.+)", key).groups()
        n = int(stage) + 1
        if part == "0":
            out[f"patch_embed{n}.{rest.replace('projection', 'proj')}"] = value
        elif part == "2":
            out[f"norm{n}.{rest}"] = value
        else:
            block, inner = rest.split(".", 1)
            prefix = f"block{n}.{block}."
            if inner.startswith("attn.attn.in_proj_"):
                kind = inner.rsplit("_", 1)[1]
                c = value.shape[0] // 3
                out[prefix + f"attn.q.{kind}"] = value[:c]
                out[prefix + f"attn.kv.{kind}"] = value[c:]
            elif inner.startswith("attn.attn.out_proj."):
                out[prefix + "attn.proj." + inner.rsplit(".", 1)[1]] = value
            elif inner.startswith("ffn.layers."):
                index, kind = inner[len("ffn.layers."):].split(".")
                name = {"0": "mlp.fc1", "1": "mlp.dwconv.dwconv", "4": "mlp.fc2"}[index]
                if index != "1" and kind == "weight":
                    value = value.reshape(value.shape[:2])
                out[prefix + f"{name}.{kind}"] = value
            else:  # norm1, norm2, attn.sr, attn.norm
                out[prefix + inner] = value
    return out


def test_segformer_official_imagenet_and_segmentation_files():
    torch.manual_seed(0)
    source = _randomised(build_segmentor("segformer_mit_b0", num_classes=19))
    official = _to_nvlabs(source.backbone.state_dict())
    assert "block1.0.attn.q.weight" in official and "patch_embed4.proj.weight" in official
    assert official["block2.1.mlp.fc1.weight"].ndim == 2
    assert detect_kind(list(official)) == "segformer_official"

    imagenet = {**official, "head.weight": torch.zeros(1000, 256), "head.bias": torch.zeros(1000)}
    target = build_segmentor("segformer_mit_b0", num_classes=19).eval()
    report = load_pretrained(target, imagenet)
    assert (report.kind, report.target, report.strict) == ("segformer_official", "backbone", True)
    assert report.dropped == ["head.bias", "head.weight"]
    _same_outputs(source.backbone, target.backbone, torch.randn(1, 3, 64, 64))

    # a segmentation file: backbone.-prefixed encoder plus the official decoder (not mappable)
    segmentation = {"state_dict": {
        **{f"backbone.{k}": v for k, v in official.items()},
        "decode_head.linear_c1.proj.weight": torch.zeros(256, 32),
        "decode_head.linear_fuse.conv.weight": torch.zeros(256, 1024, 1, 1),
        "decode_head.linear_pred.weight": torch.zeros(19, 256, 1, 1),
    }, "meta": {}}
    target = build_segmentor("segformer_mit_b0", num_classes=19).eval()
    report = load_pretrained(target, segmentation)
    assert report.target == "backbone" and len(report.dropped) == 3
    _same_outputs(source.backbone, target.backbone, torch.randn(1, 3, 64, 64))


def test_segformer_official_q_without_kv_is_an_error():
    from trainer.models.converters.segformer_official import convert_segformer_official

    with pytest.raises(ValueError, match="attn.kv.weight"):
        convert_segformer_official({"block1.0.attn.q.weight": torch.zeros(2, 2)})


# --- mmseg 1.x / 0.x, through an fsspec URL -------------------------------------------------------


@pytest.mark.parametrize("version", ["1.2.2", "0.30.0"])
def test_mmseg_checkpoint_from_fsspec_url(version):
    torch.manual_seed(1)
    source = _randomised(build_segmentor("segformer_mit_b0", num_classes=19))
    url = f"memory://ckpts/segformer-{version}.pth"
    with fsspec.open(url, "wb") as handle:
        torch.save({"meta": {"mmseg_version": version, "CLASSES": ["road"]},
                    "state_dict": source.state_dict(), "optimizer": {}}, handle)
    target = build_segmentor("segformer_mit_b0", num_classes=19).eval()
    report = load_pretrained(target, url)
    assert (report.kind, report.target, report.strict) == ("mmseg", "model", True)
    assert report.meta["mmseg_version"] == version and version in report.summary()
    _same_outputs(source, target, torch.randn(1, 3, 64, 64))


def test_full_checkpoint_that_does_not_fit_names_the_keys():
    source = build_segmentor("segformer_mit_b0", num_classes=19)
    state = source.state_dict()
    state.pop("decode_head.conv_seg.bias")
    state["decode_head.extra"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing keys: decode_head\.conv_seg\.bias.*"
                                         r"unexpected keys: decode_head\.extra"):
        load_pretrained(build_segmentor("segformer_mit_b0", num_classes=19), state)


def test_own_iteration_checkpoint_prefers_the_ema_weights():
    model = build_segmentor("segformer_mit_b0", num_classes=19)
    raw = model.state_dict()
    averaged = {k: v + 1 if v.dtype.is_floating_point else v for k, v in raw.items()}
    state = ckpt.training_state(model_state=raw, optimizer_state={}, iteration=4, rng_states=[],
                                data_state={}, ema_state={"model": averaged, "updates": 4})
    target = build_segmentor("segformer_mit_b0", num_classes=19)
    load_pretrained(target, state)
    key = "decode_head.conv_seg.bias"
    assert torch.equal(target.state_dict()[key], averaged[key])


# --- InternImage ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_internimage_classification_and_segmentation_files():
    torch.manual_seed(2)
    source = _randomised(build_segmentor("upernet_internimage_t", num_classes=19))
    backbone = source.backbone.state_dict()
    # ImageNet file (classification/models/intern_image.py): backbone keys without prefix,
    # plus conv_head and head, under "model"
    imagenet = {"model": {**backbone, "conv_head.0.weight": torch.zeros(1536, 512, 1, 1),
                          "head.weight": torch.zeros(1000, 1536), "head.bias": torch.zeros(1000)}}
    assert detect_kind(list(imagenet["model"])) == "internimage"
    target = build_segmentor("upernet_internimage_t", num_classes=19).eval()
    report = load_pretrained(target, imagenet)
    assert (report.kind, report.target, report.strict) == ("internimage", "backbone", True)
    assert report.dropped == ["conv_head.0.weight", "head.bias", "head.weight"]
    x = torch.randn(1, 3, 64, 64)
    _same_outputs(source.backbone, target.backbone, x)

    # segmentation file: backbone./decode_head./auxiliary_head. as ours, mmseg 0.x container
    target = build_segmentor("upernet_internimage_t", num_classes=19).eval()
    report = load_pretrained(target, {"meta": {"mmseg_version": "0.27.0"},
                                      "state_dict": source.state_dict()}, kind="internimage")
    assert report.target == "model" and report.strict
    with torch.no_grad():
        assert torch.equal(source.encode_decode(x), target.encode_decode(x))


# --- init_checkpoint through build_model ----------------------------------------------------------


def test_init_checkpoint_loads_an_official_segformer_backbone(tmp_path):
    from trainer.models.build import build_model

    torch.manual_seed(3)
    source = _randomised(build_segmentor("segformer_mit_b0", num_classes=19))
    path = tmp_path / "mit_b0.pth"
    torch.save(_to_nvlabs(source.backbone.state_dict()), path)
    recipe = small_recipe(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}",
                          model={"name": "segformer_mit_b0", "init_checkpoint": str(path)})
    model = build_model(recipe).eval()
    _same_outputs(source.backbone, model.backbone, torch.randn(1, 3, 32, 32))

    bad = tmp_path / "other.pth"
    torch.save({"foo.weight": torch.zeros(1)}, bad)
    recipe = small_recipe(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}",
                          model={"name": "segformer_mit_b0", "init_checkpoint": str(bad)})
    with pytest.raises(ValueError, match="fits neither the model nor its backbone"):
        build_model(recipe)


def test_internimage_h_clip_projector_head_is_dropped():
    """InternImage-H/G ImageNet files (``use_clip_projector``) carry ``dcnv3_head_x4``/``x3``
    beside ``clip_projector``; they are classifier parts, not unknown keys."""
    from trainer.models.converters.internimage_official import convert_internimage_classification

    state = {
        "levels.0.blocks.0.gamma1": torch.zeros(3),
        "dcnv3_head_x4.0.weight": torch.zeros(4096, 1, 1, 1),
        "dcnv3_head_x3.weight": torch.zeros(1024, 1, 1, 1),
        "clip_projector.cls_token": torch.zeros(1, 1, 1024),
        "fc_norm.weight": torch.zeros(768),
        "head.weight": torch.zeros(1000, 768),
    }
    kept, dropped = convert_internimage_classification(state)
    assert list(kept) == ["levels.0.blocks.0.gamma1"]
    assert dropped == sorted(k for k in state if not k.startswith("levels."))
