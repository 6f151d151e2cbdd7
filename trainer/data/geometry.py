"""Image sizes after the resizes of the training and test pipelines, in (height, width) order.

One definition of each size rule, shared by the training transforms
(:class:`trainer.data.transforms.RandomResize`) and test-time inference
(:func:`trainer.evaluate.predict_probs`): every function takes and returns sizes as
``(h, w)`` in pixels; scales are the recipe's two edge bounds, in either order.

- :func:`rescale_size`: mmcv's keep-ratio ``rescale_size`` (``mmcv/image/geometric.py``);
- :func:`stretch_size`: sssegmentation's ``Resize(keep_ratio=False)``, the target's longer
  edge along the image's longer side;
- :func:`size_to_multiple`: mmseg's ``ResizeToMultiple``.
"""

from __future__ import annotations

__all__ = ["rescale_size", "size_to_multiple", "stretch_size"]


def stretch_size(
    h: int, w: int, scale: tuple[int, int], ratio: float = 1.0
) -> tuple[int, int]:
    """Size of an (h, w) image after a resize that does not keep the aspect ratio.

    As sssegmentation's ``Resize(keep_ratio=False)`` (SegmentationBLWX/sssegmentation@eb1878c1
    ``ssseg/modules/datasets/pipelines/transforms.py``, ``Resize.__call__``): with the target
    ``(int(scale[0] * ratio), int(scale[1] * ratio))``, a taller-than-wide image (h > w) gets
    the larger target value as its height, any other (square included) as its width; a square
    ``scale`` such as LIP's (473, 473) gives a square. Training's
    ``RandomResize(keep_ratio=False, match_orientation=True)`` and the test resize of
    ``InferenceSettings(keep_ratio=False)`` both use it.

    Returns:
        (new_h, new_w) in pixels.

    Raises:
        ValueError: a size, a bound or the ratio not positive, or an empty result.
    """
    if min(h, w) <= 0 or min(scale) <= 0 or ratio <= 0:
        raise ValueError(f"sizes, scale and ratio must be positive, got {(h, w)}, {scale}, {ratio}")
    target = (int(scale[0] * ratio), int(scale[1] * ratio))
    long_edge, short_edge = max(target), min(target)
    if short_edge <= 0:
        raise ValueError(f"scale {scale} x ratio {ratio} leaves an empty image")
    return (long_edge, short_edge) if h > w else (short_edge, long_edge)


def rescale_size(
    h: int, w: int, scale: tuple[int, int], ratio: float = 1.0
) -> tuple[int, int]:
    """Size of an (h, w) image after mmseg's keep-ratio resize, in pixels, at train and test.

    mmseg's ``MultiScaleFlipAug`` (test) and mmcv's ``RandomResize`` (training) turn the scale
    and a ratio into the target ``(int(scale[0] * ratio), int(scale[1] * ratio))``;
    ``Resize(keep_ratio=True)`` then calls mmcv ``rescale_size``, which treats the target as
    bounds on the long and the short edge (its order does not matter) and scales the image as
    large as fits both::

        factor = min(long_target / max(h, w), short_target / min(h, w))
        new    = (int(h * factor + 0.5), int(w * factor + 0.5))

    Examples: Cityscapes (1024, 2048) with (2048, 1024) and ratio 0.5 -> (512, 1024); an ADE20K
    image (512, 683) with (2048, 512) and ratio 1.0 -> (512, 683), with ratio 0.75 -> (384, 512).

    Args:
        h, w: image height and width in pixels.
        scale: the test scale, two edge bounds in pixels, e.g. (2048, 1024).
        ratio: multiplier applied to ``scale`` first.

    Returns:
        (new_h, new_w) in pixels.

    Raises:
        ValueError: if a size, a bound or the ratio is not positive, or the result is empty.
    """
    if h <= 0 or w <= 0 or ratio <= 0 or len(scale) != 2 or min(scale) <= 0:
        raise ValueError(
            f"need positive h, w, scale and ratio; got h={h}, w={w}, scale={scale}, ratio={ratio}"
        )
    target = (int(scale[0] * ratio), int(scale[1] * ratio))
    factor = min(max(target) / max(h, w), min(target) / min(h, w))
    new_h, new_w = int(h * factor + 0.5), int(w * factor + 0.5)
    if new_h <= 0 or new_w <= 0:
        raise ValueError(f"resizing ({h}, {w}) to scale {scale} x {ratio} gives an empty image")
    return new_h, new_w


def size_to_multiple(h: int, w: int, divisor: int) -> tuple[int, int]:
    """Size of an (h, w) image after mmseg's ``ResizeToMultiple(size_divisor=divisor)``.

    Each edge is rounded up to the next multiple of ``divisor``::

        new_h, new_w = ceil(h / divisor) * divisor, ceil(w / divisor) * divisor

    (mmseg 0.x ``mmseg/datasets/pipelines/transforms.py`` ``ResizeToMultiple`` calls mmcv 1.x
    ``mmcv/image/geometric.py`` ``imresize_to_multiple(img, divisor, scale_factor=1,
    interpolation='bilinear')``, which takes ``_scale_size((w, h), 1)`` = (w, h), rounds each
    edge up so and resizes the image to that size (not a pad) with OpenCV ``INTER_LINEAR``.)
    Examples with divisor 32: (512, 683) -> (512, 704); (384, 512) -> (384, 512);
    (1, 33) -> (32, 64).

    Args:
        h, w: image height and width in pixels.
        divisor: the multiple, in pixels.

    Returns:
        (new_h, new_w) in pixels, each >= the input edge.

    Raises:
        ValueError: a size or the divisor not positive.
    """
    if h <= 0 or w <= 0 or divisor <= 0:
        raise ValueError(f"need positive h, w and divisor; got h={h}, w={w}, divisor={divisor}")
    return -(-h // divisor) * divisor, -(-w // divisor) * divisor
