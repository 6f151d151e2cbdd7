"""ConfusionMatrix / SegMetrics against a per-pixel numpy computation, and the text table."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainer.metrics import ConfusionMatrix, SegMetrics, format_metrics_table

NUM_CLASSES = 6
IGNORE = 255


def _random_maps(seed: int, n: int = 3, h: int = 17, w: int = 23):
    """Ground truth uses classes {0, 1, 2, 3} plus ignored pixels, predictions {0, 1, 2, 4}.

    So class 3 is only in the ground truth, class 4 only in the prediction and class 5 in
    neither.
    """
    rng = np.random.default_rng(seed)
    label = rng.choice([0, 1, 2, 3], size=(n, h, w))
    label[rng.random((n, h, w)) < 0.15] = IGNORE
    pred = rng.choice([0, 1, 2, 4], size=(n, h, w))
    # make the prediction agree with the label often enough for non-trivial IoUs
    agree = (rng.random((n, h, w)) < 0.5) & (label != IGNORE) & (label != 3)
    pred[agree] = label[agree]
    return pred.astype(np.int64), label.astype(np.int64)


def _numpy_reference(pred: np.ndarray, label: np.ndarray, num_classes: int):
    """Per-class counts straight from the pixel definitions, no confusion matrix."""
    valid = label != IGNORE
    iou, acc = [], []
    tp_total = 0
    for c in range(num_classes):
        in_gt = (label == c) & valid
        in_pred = (pred == c) & valid
        tp = int(np.sum(in_gt & in_pred))
        union = int(np.sum(in_gt | in_pred))
        n_gt = int(np.sum(in_gt))
        iou.append(tp / union if union else math.nan)
        acc.append(tp / n_gt if n_gt else math.nan)
        tp_total += tp
    a_acc = tp_total / int(np.sum(valid))
    m_iou = float(np.mean([v for v in iou if not math.isnan(v)]))
    m_acc = float(np.mean([v for v in acc if not math.isnan(v)]))
    return a_acc, m_iou, m_acc, iou, acc


def _assert_lists_close(got: list[float], want: list[float]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if math.isnan(w):
            assert math.isnan(g)
        else:
            assert g == pytest.approx(w, abs=1e-12)


def test_metrics_match_per_pixel_numpy():
    pred, label = _random_maps(0)
    cm = ConfusionMatrix(NUM_CLASSES, ignore_index=IGNORE)
    cm.update(torch.from_numpy(pred), torch.from_numpy(label))
    m = cm.compute()

    a_acc, m_iou, m_acc, iou, acc = _numpy_reference(pred, label, NUM_CLASSES)
    assert m.aAcc == pytest.approx(a_acc, abs=1e-12)
    assert m.mIoU == pytest.approx(m_iou, abs=1e-12)
    assert m.mAcc == pytest.approx(m_acc, abs=1e-12)
    _assert_lists_close(m.per_class_iou, iou)
    _assert_lists_close(m.per_class_acc, acc)

    # the designed absences: 3 only in gt, 4 only in prediction, 5 in neither
    assert m.per_class_iou[3] == 0.0 and m.per_class_acc[3] == 0.0
    assert m.per_class_iou[4] == 0.0 and math.isnan(m.per_class_acc[4])
    assert math.isnan(m.per_class_iou[5]) and math.isnan(m.per_class_acc[5])
    assert cm.matrix.dtype == torch.int64 and cm.matrix.shape == (NUM_CLASSES, NUM_CLASSES)
    assert int(cm.matrix.sum()) == int(np.sum(label != IGNORE))


def test_rows_are_ground_truth_columns_prediction():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([[2, 2, 0]]), torch.tensor([[1, 1, 0]]))
    assert cm.matrix.tolist() == [[1, 0, 0], [0, 0, 2], [0, 0, 0]]


def test_accumulating_updates_equals_one_update_on_concatenation():
    maps = [_random_maps(seed, n=2) for seed in range(4)]
    several = ConfusionMatrix(NUM_CLASSES, ignore_index=IGNORE)
    for pred, label in maps:
        several.update(torch.from_numpy(pred), torch.from_numpy(label))
        several.update(torch.from_numpy(pred[0]), torch.from_numpy(label[0]))  # (H, W) form
    once = ConfusionMatrix(NUM_CLASSES, ignore_index=IGNORE)
    once.update(
        torch.from_numpy(np.concatenate([np.concatenate([p, p[:1]]) for p, _ in maps])),
        torch.from_numpy(np.concatenate([np.concatenate([l, l[:1]]) for _, l in maps])),
    )
    assert torch.equal(several.matrix, once.matrix)
    a, b = several.compute(), once.compute()
    assert (a.aAcc, a.mIoU, a.mAcc) == (b.aAcc, b.mIoU, b.mAcc)


def test_labels_outside_class_range_are_skipped_and_bad_predictions_raise():
    cm = ConfusionMatrix(3, ignore_index=255)
    cm.update(torch.tensor([0, 1, 2, 1]), torch.tensor([0, 7, -1, 255]))
    assert cm.matrix.tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 0]]
    with pytest.raises(ValueError, match="predictions"):
        cm.update(torch.tensor([3]), torch.tensor([0]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))


def test_empty_matrix_gives_nan_and_all_reduce_without_group_is_noop():
    cm = ConfusionMatrix(2)
    cm.all_reduce()
    m = cm.compute()
    assert math.isnan(m.aAcc) and math.isnan(m.mIoU) and math.isnan(m.mAcc)
    assert int(cm.matrix.sum()) == 0


def test_to_dict_keys_and_fractions():
    m = SegMetrics(
        aAcc=0.9, mIoU=0.5, mAcc=0.6,
        per_class_iou=[0.25, math.nan], per_class_acc=[0.5, math.nan],
    )
    d = m.to_dict(["road", "sky"])
    assert list(d) == ["aAcc", "mIoU", "mAcc", "IoU.road", "IoU.sky", "Acc.road", "Acc.sky"]
    assert d["IoU.road"] == 0.25 and math.isnan(d["Acc.sky"])
    assert "IoU.0" in m.to_dict()
    with pytest.raises(ValueError):
        m.to_dict(["only-one"])


def test_table_has_names_percent_nan_and_reference_difference():
    m = SegMetrics(
        aAcc=0.95, mIoU=0.7612, mAcc=0.8,
        per_class_iou=[0.981234, math.nan], per_class_acc=[0.99, math.nan],
    )
    table = format_metrics_table(
        m, ["road", "traffic light"],
        reference={"miou": 75.28, "label": "single-scale", "source": "mmseg model zoo"},
    )
    assert "road" in table and "traffic light" in table
    assert "98.12" in table and "99.00" in table and "nan" in table
    assert "aAcc: 95.00" in table and "mIoU: 76.12" in table and "mAcc: 80.00" in table
    assert "75.28" in table and "single-scale" in table and "mmseg model zoo" in table
    assert "+0.84 points" in table

    plain = format_metrics_table(m, ["road", "traffic light"])
    assert "published" not in plain
    with pytest.raises(ValueError):
        format_metrics_table(m, ["road"])


@pytest.mark.parametrize("classes", [19, 150])  # int16 cells, and int32 (150 x 256 > 2**15)
def test_the_direct_update_counts_as_the_masked_one(classes):
    """The update without a mask (label * C + pred of every pixel, the first C x C bins kept)
    counts what masking the ignored and out-of-range labels first counts, for 8-bit maps with
    255 ignored and labels between C and 255; negative or huge labels take the masked path."""
    gen = torch.Generator().manual_seed(classes)
    pred = torch.randint(0, classes, (2, 37, 53), generator=gen)
    label = torch.randint(0, 256, (2, 37, 53), generator=gen)  # many >= C, some 255
    label[0, :5] = 255
    keep = (label != 255) & (label < classes)
    expected = torch.bincount(label[keep] * classes + pred[keep],
                              minlength=classes * classes).reshape(classes, classes)
    direct = ConfusionMatrix(classes)
    direct.update(pred, label)
    direct.update(pred[:1], label[:1])  # a smaller batch reuses the buffers
    first = torch.bincount(label[:1][keep[:1]] * classes + pred[:1][keep[:1]],
                           minlength=classes * classes).reshape(classes, classes)
    assert torch.equal(direct.matrix, expected + first)
    for odd in (-1, 1 << 40):
        masked = ConfusionMatrix(classes)
        weird = label.clone()
        weird[1, 0, 0] = odd
        masked.update(pred, weird)
        keep_w = (weird != 255) & (weird >= 0) & (weird < classes)
        assert torch.equal(masked.matrix, torch.bincount(
            weird[keep_w] * classes + pred[keep_w],
            minlength=classes * classes).reshape(classes, classes))
