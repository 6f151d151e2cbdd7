"""Loading published checkpoints (mmsegmentation layout) into segmentors."""

from __future__ import annotations

import os
from collections.abc import Mapping

from torch import Tensor, nn

_SHOWN_KEYS = 10


def _unwrap(checkpoint: Mapping) -> dict[str, Tensor]:
    """Find the parameter dict inside common checkpoint containers."""
    for container in ("state_dict", "model"):
        inner = checkpoint.get(container)
        if isinstance(inner, Mapping):
            checkpoint = inner
            break
    state = dict(checkpoint)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _first(keys: list[str]) -> str:
    more = f" ... and {len(keys) - _SHOWN_KEYS} more" if len(keys) > _SHOWN_KEYS else ""
    return ", ".join(keys[:_SHOWN_KEYS]) + more


def load_segmentor_weights(
    model: nn.Module,
    path_or_state_dict: str | os.PathLike | Mapping,
    strict: bool = True,
) -> tuple[list[str], list[str]]:
    """Load a checkpoint into ``model``.

    The checkpoint is read with ``torch.load(..., map_location="cpu", weights_only=True)``.
    A ``state_dict`` or ``model`` entry is unwrapped (mmseg checkpoints keep ``meta`` and
    ``optimizer`` beside ``state_dict``), and a ``module.`` prefix on every key (from
    DistributedDataParallel) is removed.

    Args:
        model: the module to fill, e.g. an ``EncoderDecoder``.
        path_or_state_dict: a local file path, or an already loaded checkpoint dict.
        strict: require the key sets to match exactly.

    Returns:
        ``(missing, unexpected)`` key lists (both empty when ``strict``).

    Raises:
        ValueError: when a tensor's shape differs from the model's (e.g. another
            ``num_classes``), or, with ``strict``, when keys are missing or unexpected; the
            message lists the first offending keys.
        FileNotFoundError: if the path does not exist.
        segctl.io.weights_cache.UnloadableWeightsError: the file holds pickled objects other than
            tensors, or is not a PyTorch file; the message names it.
    """
    if isinstance(path_or_state_dict, Mapping):
        checkpoint = path_or_state_dict
    else:
        from trainer.checkpoint import load_weights_file

        checkpoint = load_weights_file(path_or_state_dict)
    state = _unwrap(checkpoint)

    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: {_first(mismatched)}")
    if strict and missing:
        problems.append(f"{len(missing)} missing keys: {_first(missing)}")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_first(unexpected)}")
    if problems:
        raise ValueError("checkpoint does not fit the model; " + "; ".join(problems))
    model.load_state_dict(state, strict=strict)
    return missing, unexpected
