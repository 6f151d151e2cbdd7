"""The training data order: which sample, with which augmentation seed, each rank reads.

Sample ``k`` of the stream a rank reads is a pure function of (seed, iteration, rank), see
:class:`DataOrder`, and each sample's augmentation draws come from a generator seeded by (seed,
epoch, position), so a resumed run continues exactly and results do not depend on the number
of loader workers. With gradient accumulation (``train.grad_accum_steps`` = N) the N
micro-batches of optimizer step ``k`` are the loader batches ``k * N`` to ``k * N + N - 1`` of
that same order, so W processes accumulating N micro-batches read, step by step, the images
W * N processes without accumulation read. :func:`build_train_loader` builds the loader with
this order as its sampler instead of passing it through ``accelerator.prepare``, which would
re-shard it.
:func:`resolve_schedule` counts an epoch-based schedule in iterations of this order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from trainer.data.transforms import Compose
from segctl.recipe import Recipe
from trainer.optim import iterations_for_epochs, padded_epoch_iterations

__all__ = [
    "AugmentedDataset", "DataOrder", "IterationSampler", "build_train_loader", "resolve_schedule",
]


@dataclass
class DataOrder:
    """Which sample, with which augmentation seed, each rank reads at each iteration.

    The global stream is the concatenation of per-epoch permutations of the dataset, epoch
    ``e`` permuted by ``numpy.random.default_rng([seed, e])``. Loader batch ``i`` gives rank
    ``r`` the stream positions ``(i * world_size + r) * batch_size + j`` for ``j <
    batch_size``; the position's epoch and offset fix the dataset index and the augmentation
    seed ``SeedSequence([seed, epoch, offset])``. Nothing here has state beyond a cache.

    Without accumulation a loader batch is an iteration (optimizer step). With
    ``grad_accum_steps`` = N, step ``k`` is the N loader batches ``k * N + a`` (``a < N``):
    rank ``r``'s micro-batch ``a`` reads what rank ``a * world_size + r`` of a run with
    ``world_size * N`` processes reads at step ``k``, and an epoch is padded as for those
    ``world_size * N`` processes.

    With ``epoch_padding="per_rank"`` (``schedule.epoch_padding``) an epoch has
    :attr:`epoch_positions` = ``world_size * batch_size *``
    :func:`~trainer.optim.padded_epoch_iterations` positions, the ones past ``dataset_size``
    repeating the start of its permutation (offset ``o`` reads ``permutation[o %
    dataset_size]``), as United-Perception's ``DistributedSampler`` pads
    (``up/data/samplers/sampler.py``: ``indices += indices[:padding_size]``); only which rank
    reads which image differs (ranks interleave here, take contiguous blocks there). With
    ``"per_rank_drop_last"`` the epoch is that many whole batches rounded down (sssegmentation),
    so the last images of each epoch's permutation go unread, as there.

    Attributes:
        dataset_size: number of training samples (> 0).
        batch_size: samples per rank and loader batch (micro-batch).
        world_size: number of ranks.
        seed: the recipe's ``train.seed``.
        epoch_padding: ``"none"``, ``"per_rank"`` or ``"per_rank_drop_last"``.
        grad_accum_steps: loader batches per rank and optimizer step (``train.grad_accum_steps``).
    """

    dataset_size: int
    batch_size: int
    world_size: int
    seed: int
    epoch_padding: str = "none"
    grad_accum_steps: int = 1
    _cache: dict[int, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def permutation(self, epoch: int) -> np.ndarray:
        """The dataset indices of ``epoch`` in reading order."""
        if epoch not in self._cache:
            if len(self._cache) > 4:
                self._cache.clear()
            self._cache[epoch] = np.random.default_rng([self.seed, epoch]).permutation(
                self.dataset_size
            )
        return self._cache[epoch]

    @property
    def epoch_positions(self) -> int:
        """Stream positions (samples over all ranks) in one epoch; padded for
        ``world_size * grad_accum_steps`` ranks, a whole number of optimizer steps."""
        if self.epoch_padding == "none":
            return self.dataset_size
        ranks = self.world_size * self.grad_accum_steps
        steps = padded_epoch_iterations(self.dataset_size, self.batch_size, ranks,
                                        drop_last=self.epoch_padding == "per_rank_drop_last")
        return steps * ranks * self.batch_size

    @property
    def images_per_step(self) -> int:
        """Images of one optimizer step over all ranks: the global batch, ``batch_size *
        world_size * grad_accum_steps``."""
        return self.batch_size * self.world_size * self.grad_accum_steps

    def sample(self, iteration: int, rank: int, slot: int) -> tuple[int, int]:
        """``(dataset index, augmentation seed)`` of ``slot`` in rank's loader batch
        ``iteration`` (the optimizer step without accumulation; with it, micro-batch ``a`` of
        step ``k`` is loader batch ``k * grad_accum_steps + a``)."""
        position = (iteration * self.world_size + rank) * self.batch_size + slot
        epoch, offset = divmod(position, self.epoch_positions)
        index = int(self.permutation(epoch)[offset % self.dataset_size])
        aug_seed = int(np.random.SeedSequence([self.seed, epoch, offset]).generate_state(1)[0])
        return index, aug_seed

    def state(self) -> dict[str, int | str]:
        """What a checkpoint stores to check that a resume reads the same order."""
        state: dict[str, int | str] = {
            "seed": self.seed,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "dataset_size": self.dataset_size,
        }
        if self.epoch_padding != "none":  # older checkpoints resume as before
            state["epoch_padding"] = self.epoch_padding
        if self.grad_accum_steps != 1:  # likewise
            state["grad_accum_steps"] = self.grad_accum_steps
        return state


class IterationSampler(Sampler):
    """Yields ``(index, aug_seed)`` for one rank, optimizer steps ``start`` to ``stop``
    (exclusive): ``grad_accum_steps`` loader batches of ``batch_size`` per step."""

    def __init__(self, order: DataOrder, rank: int, start: int, stop: int) -> None:
        self.order, self.rank, self.start, self.stop = order, rank, start, stop

    def __iter__(self) -> Iterator[tuple[int, int]]:
        n = self.order.grad_accum_steps
        for batch in range(self.start * n, self.stop * n):
            for slot in range(self.order.batch_size):
                yield self.order.sample(batch, self.rank, slot)

    def __len__(self) -> int:
        steps = max(self.stop - self.start, 0)
        return steps * self.order.grad_accum_steps * self.order.batch_size


class AugmentedDataset(Dataset):
    """Indexed by ``(index, aug_seed)``: load sample ``index``, apply ``pipeline`` with a
    generator seeded by ``aug_seed``. Items: the pipeline's ``image`` and ``label`` and, where
    it gives one, ``valid_box``: ``float32 (3, h, w)`` and ``int64 (h, w)`` from the float
    pipeline; ``uint8 (h, w, 3)``, ``uint8 (h, w)`` and ``int64 (4,)`` from the uint8 one
    (:func:`~trainer.data.transforms.train_pipeline` with ``normalize_on_device``)."""

    def __init__(self, dataset, pipeline: Compose) -> None:
        self.dataset = dataset
        self.pipeline = pipeline

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        index, aug_seed = key
        sample = self.pipeline(self.dataset.load(index), np.random.default_rng(aug_seed))
        return {key: sample[key] for key in ("image", "label", "valid_box") if key in sample}


def build_train_loader(
    dataset: AugmentedDataset, order: DataOrder, *, rank: int, start: int, stop: int,
    num_workers: int, pin_memory: bool,
) -> DataLoader:
    """``order.grad_accum_steps`` batches (micro-batches) per optimizer step in ``[start,
    stop)`` for ``rank``, in :class:`DataOrder`: one batch per step without accumulation.

    Workers are started with ``spawn``, not ``fork``: a forked worker inherits OpenCV's and
    OpenMP's thread pools in whatever state the parent left them, and deadlocks on its first
    use of them when the parent had used them (observed with ``cv2`` after generating data in
    the same process). A script that trains must therefore guard its entry with
    ``if __name__ == "__main__":``, as submitit's job entry does.
    """
    return DataLoader(
        dataset,
        batch_size=order.batch_size,
        sampler=IterationSampler(order, rank, start, stop),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        multiprocessing_context="spawn" if num_workers > 0 else None,
        pin_memory=pin_memory,
        # A private generator: creating the loader's iterator leaves the global RNG untouched.
        generator=torch.Generator().manual_seed(order.seed),
    )


def resolve_schedule(recipe: Recipe, dataset_size: int, world_size: int) -> Recipe:
    """The recipe with ``schedule.max_iters`` filled from ``schedule.max_epochs``.

    ``max_iters = ceil(max_epochs * dataset_size / (train.batch_size * world_size *
    train.grad_accum_steps))`` optimizer steps, or with ``schedule.epoch_padding: per_rank``
    ``max_epochs`` padded epochs of ``world_size * grad_accum_steps`` ranks
    (:func:`trainer.optim.iterations_for_epochs`; as :attr:`DataOrder.epoch_positions`):
    the schedule of a run with ``grad_accum_steps`` times the processes. ``max_epochs`` stays
    as the record of where it came from. A recipe with ``max_iters`` is returned unchanged.
    The copy is not re-validated (the schema wants exactly one of the two); use it in this
    process only.
    """
    sched = recipe.schedule
    if sched.max_iters is not None or sched.max_epochs is None:
        return recipe
    ranks = world_size * recipe.train.grad_accum_steps  # each micro-batch plays one process
    iters = iterations_for_epochs(sched.max_epochs, dataset_size, recipe.train.batch_size,
                                  ranks, sched.epoch_padding)
    return recipe.model_copy(update={"schedule": sched.model_copy(update={"max_iters": iters})})
