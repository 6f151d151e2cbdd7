"""The evaluation request: resolved once by ``plan_evaluation``, carried by submitit's pickle to
the job unchanged, and obeyed by ``run_evaluation``."""

from __future__ import annotations

import pickle

import pytest
import torch

from segctl.recipe.eval_request import EvalRequest, OutputFormat
from tests.trainer_runs import make_run_dir, small_recipe


def test_request_is_frozen_typed_and_pickles_to_an_equal_value():
    request = EvalRequest(ms_flip=True, checkpoint="s3://b/k/final.pt", label="ms_flip-x",
                          output_format="cityscapes-submission", published=True)
    assert request.output_format is OutputFormat.CITYSCAPES_SUBMISSION
    assert pickle.loads(pickle.dumps(request)) == request
    with pytest.raises(AttributeError):
        request.label = "other"  # type: ignore[misc]
    with pytest.raises(ValueError, match="output_format must be one of"):
        EvalRequest(ms_flip=False, output_format="png")
    with pytest.raises(TypeError, match="ms_flip"):
        EvalRequest(ms_flip=None)  # type: ignore[arg-type]
    single = EvalRequest(ms_flip=False)
    assert single.name_for("/r/checkpoints/iter_0000004.pt") == "iter_0000004-ss"
    assert request.name_for("/r/checkpoints/final.pt") == "ms_flip-x"


def test_plan_evaluation_resolves_the_request_once(segctl_env, tmp_path):
    from segctl.submission import plan_evaluation

    recipe = small_recipe(tmp_path / "data", "", eval={"mode": "whole", "ms_flip": True})
    run_dir = segctl_env / "runs" / "r"
    plan = plan_evaluation(run_dir, recipe, "x.yaml", None, None, "local")
    (request,) = plan.args
    assert request.ms_flip is True and request.checkpoint is None  # the recipe's eval.ms_flip
    assert request.output_format is OutputFormat.METRICS and not request.published
    assert plan.label == request.label and request.label.startswith("ms_flip-")

    published = plan_evaluation(run_dir, recipe, "x.yaml", "https://h/m.pth", False, "local",
                                output_format=OutputFormat.CITYSCAPES_SUBMISSION, published=True)
    (request,) = published.args
    assert request == EvalRequest(
        ms_flip=False, checkpoint="https://h/m.pth", label=published.label,
        output_format=OutputFormat.CITYSCAPES_SUBMISSION, published=True,
    )
    assert published.label.startswith("published-ss-")


@pytest.mark.slow  # builds a model and evaluates a frame
def test_request_round_trips_through_the_job(segctl_env, cityscapes_frame_root, tmp_path):
    """The plan's request, pickled as submitit pickles a submission and called as the node calls
    it, reaches run_evaluation intact: the result files carry its label and mode."""
    from submitit.core.utils import DelayedSubmission

    from segctl.jobs import EvalJob
    from segctl.submission import plan_evaluation
    from trainer import checkpoint as ckpt
    from trainer.models import build_segmentor

    recipe = small_recipe(cityscapes_frame_root, f"sqlite:///{tmp_path / 'mlflow.db'}",
                          name="request")
    run_dir = make_run_dir(segctl_env / "runs" / "request", recipe)
    torch.manual_seed(0)
    ckpt.save_final_weights(run_dir, build_segmentor("segformer_mit_b0", 19).state_dict())
    plan = plan_evaluation(run_dir, recipe, "x.yaml", None, False, "local")

    pickled = tmp_path / "submitted.pkl"
    DelayedSubmission(EvalJob(), str(run_dir), *plan.args,
                      weights_dir=str(plan.weights_dir)).dump(pickled)
    delayed = DelayedSubmission.load(pickled)
    assert delayed.args[1:] == plan.args and type(delayed.args[1]) is EvalRequest
    result = delayed.result()

    assert result["name"] == plan.label and result["mode"] == "ss"
    assert result["checkpoint"].endswith("final.pt") and result["published"] is False
    assert (run_dir / "eval" / f"{plan.label}.json").is_file()
    assert (run_dir / "eval" / f"{plan.label}.txt").is_file()
