"""The control plane's model presets and the trainer's builder table name the same models."""

from __future__ import annotations

import pytest
import torch

from segctl.recipe import MODEL_PRESETS
from trainer.models import MODEL_BUILDERS, build_segmentor, count_parameters


def test_every_preset_has_a_builder_and_every_builder_a_preset():
    assert set(MODEL_PRESETS) == set(MODEL_BUILDERS)


@pytest.mark.slow
def test_every_model_builds_on_the_meta_device():
    for name in MODEL_PRESETS:
        with torch.device("meta"):
            model = build_segmentor(name, num_classes=19)
        assert count_parameters(model) > 1_000_000, name
