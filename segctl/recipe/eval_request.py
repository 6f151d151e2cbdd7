"""What an evaluation job is asked to do: the typed request both planes share.

``segctl eval`` resolves every choice once, in :func:`segctl.submission.plan_evaluation`
(the recipe's ``eval.ms_flip`` where the command line says nothing, the result label, the
output format), and submits an :class:`EvalRequest` to the job
(:class:`segctl.jobs.EvalJob` -> :func:`trainer.entry.run_evaluation`). The request is a
frozen dataclass of strings, booleans and an enum, so submitit's pickle carries it to the job
unchanged; the control plane only writes it, never reads a pickle back.

Both planes import this module; it imports nothing beyond the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePath

__all__ = ["EvalRequest", "OutputFormat"]


class OutputFormat(StrEnum):
    """What an evaluation writes under ``RUN_DIR/eval/``."""

    #: Score the validation split: ``<label>.json`` and ``<label>.txt``.
    METRICS = "metrics"
    #: Predict the Cityscapes test split (else the validation split) and zip labelId PNGs into
    #: ``<label>-cityscapes-submission.zip`` for the benchmark server; nothing is scored.
    CITYSCAPES_SUBMISSION = "cityscapes-submission"


@dataclass(frozen=True)
class EvalRequest:
    """One evaluation of a run's checkpoint, as the job receives it.

    Attributes:
        ms_flip: multi-scale (``eval.scales``) + flip; False: single scale.
        checkpoint: a path, an fsspec URL, or a file name in ``RUN_DIR/checkpoints``; None:
            the run's ``final.pt``, else its latest ``iter_*.pt`` (resolved in the job).
        label: the name of the result files under ``eval/``; None: ``<checkpoint stem>-<mode>``
            (:meth:`name_for`), e.g. ``final-ss``.
        output_format: an :class:`OutputFormat` (its string value is accepted and converted).
        published: the checkpoint is the recipe's ``reference.checkpoint`` (``segctl eval
            --published``): its metrics are logged apart from the run's own.

    Raises:
        ValueError: an ``output_format`` that is not one of :class:`OutputFormat`'s values.
        TypeError: ``ms_flip`` or ``published`` not a bool.
    """

    ms_flip: bool
    checkpoint: str | None = None
    label: str | None = None
    output_format: OutputFormat = OutputFormat.METRICS
    published: bool = False

    def __post_init__(self) -> None:
        try:
            output_format = OutputFormat(self.output_format)
        except ValueError:
            formats = tuple(f.value for f in OutputFormat)
            raise ValueError(
                f"output_format must be one of {formats}, got {self.output_format!r}"
            ) from None
        object.__setattr__(self, "output_format", output_format)
        for field in ("ms_flip", "published"):
            if not isinstance(getattr(self, field), bool):
                raise TypeError(f"{field} must be a bool, got {getattr(self, field)!r}")

    @property
    def mode(self) -> str:
        """``"ms_flip"`` or ``"ss"``: the mode's name in labels, result files and metric names."""
        return "ms_flip" if self.ms_flip else "ss"

    def name_for(self, checkpoint: str) -> str:
        """The result name: :attr:`label`, else ``<stem of checkpoint>-<mode>``."""
        return self.label or f"{PurePath(checkpoint).stem}-{self.mode}"
