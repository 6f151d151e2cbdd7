"""The resize sizes of training and test come from one module, in (h, w) order, and agree with
mmcv's own ``rescale_size`` and sssegmentation's ``Resize(keep_ratio=False)`` over many sizes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from trainer.data.geometry import rescale_size, size_to_multiple, stretch_size
from trainer.data.transforms import RandomResize


def mmcv_rescale_size(old_size: tuple[int, int], scale: tuple[int, int]) -> tuple[int, int]:
    """mmcv 1.x ``mmcv/image/geometric.py`` ``rescale_size(old_size, scale)`` with a tuple scale,
    transcribed: sizes are (w, h) there."""
    w, h = old_size
    max_long_edge, max_short_edge = max(scale), min(scale)
    scale_factor = min(max_long_edge / max(h, w), max_short_edge / min(h, w))
    return int(w * float(scale_factor) + 0.5), int(h * float(scale_factor) + 0.5)


def ssseg_stretch(h: int, w: int, target: tuple[int, int]) -> tuple[int, int]:
    """sssegmentation ``Resize.__call__`` with ``keep_ratio=False``: (h, w) of the output."""
    long_edge, short_edge = max(target), min(target)
    return (long_edge, short_edge) if h > w else (short_edge, long_edge)


SIZES = [(1, 1), (7, 3), (3, 7), (333, 500), (512, 683), (683, 512), (1024, 2048), (2048, 1024),
         (375, 500), (473, 473), (1080, 1920), (97, 1301)]
SCALES = [(2048, 1024), (1024, 2048), (2048, 512), (512, 512), (473, 473), (520, 520),
          (1333, 800), (640, 640), (3, 2), (100, 400)]
RATIOS = [0.5, 0.75, 0.875, 1.0, 1.25, 1.5, 1.75, 2.0, 0.6180339887, 1.3333333]


def test_rescale_size_agrees_with_mmcv_over_many_sizes_scales_and_ratios():
    checked = 0
    for (h, w), scale, ratio in itertools.product(SIZES, SCALES, RATIOS):
        target = (int(scale[0] * ratio), int(scale[1] * ratio))
        new_w, new_h = mmcv_rescale_size((w, h), target)
        if min(new_w, new_h) <= 0:
            with pytest.raises(ValueError):
                rescale_size(h, w, scale, ratio)
            continue
        assert rescale_size(h, w, scale, ratio) == (new_h, new_w), (h, w, scale, ratio)
        assert rescale_size(h, w, target) == (new_h, new_w), (h, w, target)
        checked += 1
    assert checked > 1000


def test_random_resize_takes_its_sizes_from_the_shared_rules():
    """RandomResize's (width, height) target is the shared (h, w) rule's, reversed, for every
    ratio it may draw, with and without keep_ratio."""
    rng = np.random.default_rng(0)
    for (h, w), scale in itertools.product(SIZES[2:], SCALES[:8]):
        for ratio in (*RATIOS, *rng.uniform(0.5, 2.0, 8)):
            target = (int(scale[0] * ratio), int(scale[1] * ratio))
            kept = RandomResize(scale=scale, keep_ratio=True).target_size(w, h, ratio)
            assert kept == mmcv_rescale_size((w, h), target)
            assert kept == rescale_size(h, w, scale, ratio)[::-1]
            oriented = RandomResize(scale=scale, keep_ratio=False, match_orientation=True)
            assert oriented.target_size(w, h, ratio) == ssseg_stretch(h, w, target)[::-1]
            assert oriented.target_size(w, h, ratio) == stretch_size(h, w, scale, ratio)[::-1]
            plain = RandomResize(scale=scale, keep_ratio=False).target_size(w, h, ratio)
            assert plain == target


def test_size_to_multiple_rounds_each_edge_up():
    assert size_to_multiple(512, 683, 32) == (512, 704)
    assert size_to_multiple(1, 33, 32) == (32, 64)
