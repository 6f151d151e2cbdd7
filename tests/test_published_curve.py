"""Reading published training logs (mmcv ``*.log.json``, mmengine ``scalars.json``) and the
comparisons a run makes against them."""

from __future__ import annotations

import json

import pytest

from segctl.recipe.published_curve import (
    CurveFormatError,
    PublishedCurve,
    compare_lr,
    loss_gap,
    miou_gap,
    parse_log,
)

#: The shape of an mmcv log: run information first, train lines every 50 iterations, a val
#: line (whose "iter" counts validation images) after the evaluation at 100.
MMCV = "\n".join(json.dumps(line) for line in [
    {"env_info": "sys.platform: linux", "seed": 0, "exp_name": "upernet.py"},
    {"mode": "train", "epoch": 1, "iter": 50, "lr": 0.01, "memory": 9000, "data_time": 0.01,
     "decode.loss_ce": 3.1, "aux.loss_ce": 1.2, "loss": 4.3, "time": 0.91},
    {"mode": "train", "epoch": 1, "iter": 100, "lr": 0.00994, "loss": 3.9, "time": 0.89},
    {"mode": "val", "epoch": 1, "iter": 2000, "lr": 0.00994, "aAcc": 0.7012, "mIoU": 0.2345,
     "mAcc": 0.31},
    {"mode": "train", "epoch": 1, "iter": 150, "lr": 0.00989, "loss": 3.5, "time": 0.93},
])

MMENGINE = "\n".join(json.dumps(line) for line in [
    {"lr": 0.01, "data_time": 0.01, "loss": 2.5, "decode.loss_ce": 2.5, "time": 0.4,
     "iter": 50, "memory": 4000, "step": 50},
    {"lr": 0.0099, "loss": 2.0, "time": 0.42, "iter": 100, "memory": 4000, "step": 100},
    {"aAcc": 88.1, "mIoU": 61.25, "mAcc": 70.0, "data_time": 0.01, "time": 0.2, "step": 100},
])


def test_mmcv_log_json_is_read_with_val_lines_placed_at_their_training_iteration():
    curve = parse_log(MMCV, source="https://example.org/x.log.json", val_interval=100)
    assert [p.iteration for p in curve.train] == [50, 100, 150]
    assert curve.train[0].lr == 0.01 and curve.train[0].loss == 4.3
    (val,) = curve.val
    assert val.iteration == 100  # not 2000, the number of validation images
    assert val.miou == pytest.approx(23.45)  # percent, from mmcv's fraction
    assert curve.final_miou == pytest.approx(23.45)
    assert curve.lr_decimals == 5
    assert curve.seconds_per_iter() == pytest.approx(0.91)
    assert curve.last_iteration == 150


def test_an_mmcv_val_line_without_the_interval_takes_the_train_line_before_it():
    (val,) = parse_log(MMCV).val
    assert val.iteration == 100


def test_mmengine_scalars_json_is_read_in_percent_at_full_precision():
    curve = parse_log(MMENGINE)
    assert [(p.iteration, p.lr, p.loss) for p in curve.train] == [(50, 0.01, 2.5),
                                                                  (100, 0.0099, 2.0)]
    assert [(v.iteration, v.miou) for v in curve.val] == [(100, 61.25)]
    assert curve.lr_decimals is None


def test_the_curve_survives_a_json_round_trip():
    curve = parse_log(MMCV, source="s", val_interval=100)
    again = PublishedCurve.from_json(json.loads(json.dumps(curve.to_json())))
    assert again == curve and again.train_at(100) == curve.train_at(100)


@pytest.mark.parametrize("text, says", [
    ("{not json", "line 1: not JSON"),
    ('{"iter": 1, "loss": 1.0}\n[1, 2]', "line 2: not a JSON object"),
    ('{"env_info": "x"}\n{"mode": "val", "mIoU": 0.4}', "no training lines"),
])
def test_other_files_are_refused_naming_the_line(text, says):
    with pytest.raises(CurveFormatError, match=says):
        parse_log(text, source="log.json")


def test_learning_rates_are_compared_after_the_logs_own_rounding():
    curve = parse_log(MMCV, source="L", val_interval=100)
    assert compare_lr(curve, 50, 0.0100000004) is None
    assert compare_lr(curve, 100, 0.009943) is None  # mmcv logged it rounded: 0.00994
    message = compare_lr(curve, 100, 0.0099)
    assert message and "iteration 100 is 0.0099," in message and "0.00994" in message
    assert compare_lr(curve, 75, 1.0) is None  # no published line there
    full = parse_log(MMENGINE)
    assert compare_lr(full, 100, 0.0099) is None
    assert compare_lr(full, 100, 0.00990001) is not None  # full precision: compared exactly


def test_loss_and_miou_gaps_are_measured_at_the_same_iterations():
    curve = parse_log(MMCV, val_interval=100)
    assert loss_gap(curve, 100, 3.9 * 1.5) == pytest.approx(0.5)
    assert loss_gap(curve, 75, 1.0) is None
    assert miou_gap(curve, 50, 10.0) is None  # no published evaluation yet
    gap, point = miou_gap(curve, 150, 20.0)
    assert gap == pytest.approx(20.0 - 23.45) and point.iteration == 100
