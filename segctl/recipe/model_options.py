"""The keyword options each model builder takes, typed, for offline validation of ``model.options``.

The builders live in ``trainer.models`` (torch); the control plane checks a recipe without
importing them, against this table. ``tests/reliability/test_recipe_limits.py`` compares it with
``inspect.signature`` of every builder in ``trainer.models.MODEL_BUILDERS``, so the two cannot
drift: a new builder option is added here in the same change.

Types are those a YAML value takes: ``bool``, ``int``, ``float`` (an integer is accepted),
``str`` and ``list[int]``. An option whose builder default is ``None`` takes the non-None type
(a recipe leaves the option out to keep the default).
"""

from __future__ import annotations

import difflib
from typing import Any

from segctl.recipe.errors import short_repr

#: An option's value type: ``bool``, ``int``, ``float``, ``str`` or ``list[int]``.
OptionType = object

_SEGFORMER: dict[str, OptionType] = {
    "align_corners": bool,
    "decoder_channels": int,
    "drop_path_rate": float,
    "dropout_ratio": float,
}
_SEGFORMER_OFFICIAL: dict[str, OptionType] = {
    "decoder_channels": int,
    "drop_path_rate": float,
    "dropout_ratio": float,
}
_HRNET: dict[str, OptionType] = {
    "align_corners": bool,
    "dropout_ratio": float,
    "fuse_align_corners": bool,
    "stem_relu": bool,
}
_DEEPLAB: dict[str, OptionType] = {
    "align_corners": bool,
    "drop_path_rate": float,
    "dropout_ratio": float,
}
_MCIBI: dict[str, OptionType] = {
    "act": str,
    "align_corners": bool,
    "backbone_drop_rate": float,
    "base_momentum": float,
    "context_dilations": list[int],
    "downsample_backbone": bool,
    "drop_path_rate": float,
    "dropout": float,
    "feats_channels": int,
    "ignore_index": int,
    "momentum_base_lr": float,
    "num_feats_per_cls": int,
    "out_channels": int,
    "stem_relu": bool,
    "transform_channels": int,
    "use_memory_loss": bool,
}
_INTERNIMAGE: dict[str, OptionType] = {
    "align_corners": bool,
    "drop_path_rate": float,
    "dropout_ratio": float,
    "with_cp": bool,
}


def _table() -> dict[str, dict[str, OptionType]]:
    from segctl.recipe.models import MODEL_PRESETS

    families = (
        ("segformer_official_mit_", _SEGFORMER_OFFICIAL),
        ("segformer_mit_", _SEGFORMER),
        ("fcn_hrnetv2_", _HRNET),
        ("ocr_hrnetv2_", _HRNET),
        ("deeplabv3_mcibi_", _MCIBI),
        ("deeplabv3_", _DEEPLAB),
        ("upernet_internimage_", _INTERNIMAGE),
    )
    table = {}
    for name in MODEL_PRESETS:
        options = next((opts for prefix, opts in families if name.startswith(prefix)), None)
        if options is None:
            raise RuntimeError(f"model preset {name!r} has no entry in segctl.recipe.model_options")
        table[name] = options
    return table


#: Model preset name -> {option name: value type} of its builder's keyword options.
MODEL_OPTIONS: dict[str, dict[str, OptionType]] = _table()


def _type_name(kind: OptionType) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        kind, "a list of integers"
    )


def _matches(value: Any, kind: OptionType) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    return isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    )


def option_problems(model: str, options: dict[str, Any]) -> list[str]:
    """What is wrong with ``options`` for the model preset ``model`` ([] if nothing).

    Unknown options are named together, with the closest known name where one is close and
    every option the model takes (in the words of the trainer's own check,
    ``trainer.models.build.builder_options``); each value of the wrong type names the type expected.
    A model not in :data:`MODEL_OPTIONS` gives [] (its name is reported elsewhere).
    """
    accepted = MODEL_OPTIONS.get(model)
    if accepted is None:
        return []
    problems = []
    unknown = sorted(str(key) for key in options if key not in accepted)
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, list(accepted), n=1)
            if close:
                which = f" for {key!r}" if len(unknown) > 1 else ""
                hints.append(f"did you mean {close[0]!r}{which}")
        hint = f"{', '.join(hints)}? " if hints else ""
        shown = short_repr(unknown)
        problems.append(
            f"model.options {shown} are not options of model {model!r}; {hint}"
            f"its options: {', '.join(sorted(accepted))}"
        )
    for key, value in options.items():
        kind = accepted.get(key)
        if kind is not None and not _matches(value, kind):
            problems.append(
                f"option {key!r} of model {model} takes {_type_name(kind)}, got {short_repr(value)}"
            )
    return problems
