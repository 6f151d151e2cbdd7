"""Model building from a recipe: the builder's options, the auxiliary-loss weights and the
initial weights.

:func:`build_model` is what training, evaluation and the weight checks call to turn
``model.*`` into a segmentor; the builders themselves are in :data:`trainer.models.MODEL_BUILDERS`.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from torch import nn

from segctl.recipe import Recipe
from segctl.recipe.dataset_spec import DatasetSpec
from trainer.models import MODEL_BUILDERS, build_segmentor
from trainer.models.converters.pretrained import load_pretrained

__all__ = ["auxiliary_keys", "build_model", "builder_options", "load_init_weights"]

log = logging.getLogger(__name__)


# sssegmentation names COCO-Stuff-10k "cocostuff10k" in MCIBI_REFERENCE_OPTIONS (either id space)
_MCIBI_DATASET_KEYS = {"coco_stuff10k": "cocostuff10k", "coco_stuff10k_182": "cocostuff10k"}


def builder_options(recipe: Recipe) -> dict[str, Any]:
    """Keyword options for the recipe's model builder.

    In order (later wins): MCIBI's per-row reference options
    (``trainer.models.deeplab_zoo.MCIBI_REFERENCE_OPTIONS`` for the backbone and dataset, when
    listed), ``model.drop_path_rate``, then ``model.options``.

    Raises:
        ValueError: an option the builder does not take; the message names the option, the
            model and the options it does take.
    """
    from trainer.models.deeplab_zoo import MCIBI_REFERENCE_OPTIONS

    name = recipe.model.name
    options: dict[str, Any] = {}
    if name.startswith("deeplabv3_mcibi_"):
        backbone = name[len("deeplabv3_mcibi_"):]
        dataset = _MCIBI_DATASET_KEYS.get(recipe.data.dataset, recipe.data.dataset)
        options.update(MCIBI_REFERENCE_OPTIONS.get((backbone, dataset), {}))
    if recipe.model.drop_path_rate is not None:
        options["drop_path_rate"] = recipe.model.drop_path_rate
    options.update(recipe.model.options)
    builder = MODEL_BUILDERS.get(name)
    if builder is not None and recipe.model.options:
        params = inspect.signature(builder).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            accepted = sorted(k for k, p in params.items()
                              if p.kind is inspect.Parameter.KEYWORD_ONLY
                              or (p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
                                  and k != "num_classes"))
            unknown = sorted(set(recipe.model.options) - set(accepted))
            if unknown:
                raise ValueError(
                    f"model.options {unknown} are not options of model {name!r}; "
                    f"its options: {', '.join(accepted)}"
                )
    return options


def auxiliary_keys(model: nn.Module) -> list[str]:
    """Output keys of the segmentor's auxiliary heads (``"aux"`` or ``"aux0"``, ``"aux1"``, ...),
    as :class:`~trainer.models.segmentor.EncoderDecoder` names them; [] without one."""
    aux = getattr(model, "auxiliary_head", None)
    if aux is None:
        return []
    if isinstance(aux, nn.ModuleList):
        return [f"aux{k}" for k in range(len(aux))]
    return ["aux"]


def build_model(recipe: Recipe, *, load_init: bool = True,
                init_weights: str | None = None) -> nn.Module:
    """The recipe's segmentor; with ``load_init``, filled from ``model.init_checkpoint``
    (read from ``init_weights`` when given: the job's cached copy of that URL).

    The builder receives :func:`builder_options`. ``model.aux_loss_weight`` replaces the
    model's ``loss_weights`` for every auxiliary output (:func:`auxiliary_keys`; MCIBI's
    ``stage1`` is part of its decode head and keeps its weight). The init checkpoint goes
    through :func:`trainer.models.converters.pretrained.load_pretrained`: a full segmentor
    loads with ``strict=True``, a backbone (e.g. ImageNet) checkpoint into the backbone alone.

    Raises:
        ValueError: an unknown option; ``aux_loss_weight`` for a model without an auxiliary
            head; a checkpoint that fits neither the model nor its backbone.
    """
    num_classes = DatasetSpec.from_recipe(recipe).num_classes
    model = build_segmentor(recipe.model.name, num_classes, **builder_options(recipe))
    if recipe.model.aux_loss_weight is not None:
        keys = auxiliary_keys(model)
        if not keys:
            raise ValueError(
                f"model.aux_loss_weight is set but model {recipe.model.name!r} has no "
                "auxiliary head"
            )
        model.loss_weights.update({k: float(recipe.model.aux_loss_weight) for k in keys})
    if load_init and recipe.model.init_checkpoint:
        load_init_weights(model, init_weights or recipe.model.init_checkpoint)
    return model


def load_init_weights(model: nn.Module, path_or_url: str) -> str:
    """Load pretrained weights (see :func:`build_model`); returns ``"model"`` or ``"backbone"``."""
    report = load_pretrained(model, path_or_url)
    log.info("%s", report.summary())
    return report.target
