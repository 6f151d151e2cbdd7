"""Recipe loading: presets, overrides, gathered errors with file:line:field, run identity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segctl.recipe import (
    DATASET_PRESETS,
    Recipe,
    RecipeError,
    load_recipe,
    parse_json_recipe,
    recipe_hash,
    run_id,
)
from segctl.recipe.schema import TrainConfig
from tests.trainer_runs import recipe_yaml

GOOD = recipe_yaml("city-b0", max_iters=160000, interval=16000, batch_size=1) + """\
reference:
  miou_ss: 76.54
  source: mmseg segformer README
"""


def write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_presets_fill_what_the_recipe_leaves_out(tmp_path):
    recipe = load_recipe(write(tmp_path, GOOD)).recipe
    preset = DATASET_PRESETS["cityscapes"]
    assert recipe.data.train_scale == preset.train_scale == (2048, 1024)
    assert recipe.eval.test_scale == (2048, 1024)
    assert (recipe.data.train_split, recipe.data.val_split) == ("train", "val")
    assert recipe.tracking.experiment == "cityscapes"
    assert recipe.optim.lr == 6e-5 and recipe.optim.head_lr_mult == 10.0
    ade = load_recipe(write(tmp_path, GOOD.replace("cityscapes", "ade20k"))).recipe
    assert ade.data.train_scale == (2048, 512)
    assert DATASET_PRESETS["ade20k"].reduce_zero_label and DATASET_PRESETS["ade20k"].num_classes == 150


def test_overrides_are_typed_by_the_schema(tmp_path):
    loaded = load_recipe(
        write(tmp_path, GOOD),
        ["train.seed=7", "data.crop_size=[256, 512]", "eval.ms_flip=true", "optim.grad_clip=0.1"],
    )
    recipe = loaded.recipe
    assert recipe.train.seed == 7
    assert recipe.data.crop_size == (256, 512)
    assert recipe.eval.ms_flip is True
    assert recipe.optim.grad_clip == 0.1


def test_every_error_is_reported_with_file_line_and_field(tmp_path):
    path = write(
        tmp_path,
        """\
name: ok
data:
  dataset: citiscapes
  root: /x
  crop_size: [512, abc]
  cropsize: 3
model:
  name: segformer_mit_b0
schedule:
  max_iters: 10
  val_interval: 5
train:
  batch_size: -1
""",
    )
    with pytest.raises(RecipeError) as info:
        load_recipe(path, ["optim.lrr=3"])
    found = {(i.origin, i.line, i.field) for i in info.value.issues}
    assert (str(path), 3, "data.dataset") in found
    assert (str(path), 5, "data.crop_size[1]") in found
    assert (str(path), 6, "data.cropsize") in found
    assert (str(path), 9, "schedule.checkpoint_interval") in found
    assert (str(path), 13, "train.batch_size") in found
    assert ("--set optim.lrr=3", None, "optim.lrr") in found
    report = info.value.report()
    assert "did you mean 'crop_size'" in report and "did you mean 'lr'" in report
    assert f"{path}:3: data.dataset: unknown dataset preset 'citiscapes'" in report


def test_malformed_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "name: x\ndata:\n  dataset: [cityscapes\n  root: y\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    (issue,) = info.value.issues
    assert issue.origin == str(path) and issue.line in (3, 4, 5)
    assert "malformed YAML" in issue.message


@pytest.mark.parametrize(
    ("text", "needle"),
    [("", "this is empty"), ("- a\n- b\n", "this is a list"), ("name: a\nname: b\n", "duplicate key")],
)
def test_document_shape_errors(tmp_path, text, needle):
    with pytest.raises(RecipeError, match=needle):
        load_recipe(write(tmp_path, text))


def test_missing_file_is_a_recipe_error(tmp_path):
    with pytest.raises(RecipeError, match="cannot read file"):
        load_recipe(tmp_path / "nope.yaml")


def test_slide_mode_needs_its_window(tmp_path):
    with pytest.raises(RecipeError, match="needs crop_size and stride"):
        load_recipe(write(tmp_path, GOOD + "eval:\n  mode: slide\n"))
    ok = load_recipe(
        write(tmp_path, GOOD + "eval:\n  mode: slide\n  crop_size: [1024, 1024]\n  stride: [768, 768]\n")
    )
    assert ok.recipe.eval.stride == (768, 768)


def test_run_id_ignores_keys_that_do_not_change_results(tmp_path):
    base = load_recipe(write(tmp_path, GOOD)).recipe
    rid = run_id(base)
    assert rid.startswith("city-b0-") and len(rid) == len("city-b0-") + 8
    for same in (
        ["data.root=/elsewhere", "data.num_workers=8"],
        ["cluster.nodes=4", "tracking.uri=http://127.0.0.1:5000"],
        ["eval.ms_flip=true", "description=another words"],
    ):
        assert run_id(load_recipe(write(tmp_path, GOOD), same).recipe) == rid, same
    for different in (["train.seed=1"], ["optim.lr=1e-4"], ["data.crop_size=[256, 256]"]):
        assert run_id(load_recipe(write(tmp_path, GOOD), different).recipe) != rid, different


def test_run_id_ignores_values_equal_to_schema_defaults(tmp_path):
    """Writing a default out names the same run; a new schema field with a default would too."""
    base = load_recipe(write(tmp_path, GOOD)).recipe
    default_seed = TrainConfig.model_fields["seed"].default
    explicit = load_recipe(write(tmp_path, GOOD), [f"train.seed={default_seed}"]).recipe
    assert run_id(explicit) == run_id(base)
    changed = load_recipe(write(tmp_path, GOOD), [f"train.seed={default_seed + 1}"]).recipe
    assert run_id(changed) != run_id(base)


def test_resolved_recipe_round_trips_through_json(tmp_path):
    recipe = load_recipe(write(tmp_path, GOOD)).recipe
    again = parse_json_recipe(recipe.model_dump_json())
    assert again == recipe
    assert recipe_hash(again) == recipe_hash(recipe)


def test_json_schema_is_closed_and_documented():
    schema = Recipe.model_json_schema()
    data = schema["$defs"]["DataConfig"]
    assert data["additionalProperties"] is False
    assert "crop_size" in data["required"]
    assert "description" in data["properties"]["root"]
    json.dumps(schema)
