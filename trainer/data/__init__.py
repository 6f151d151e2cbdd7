"""Datasets in their public layouts, the standard transforms, and a procedural dataset."""

from trainer.data.base import DatasetLayoutError, SegmentationDataset
from trainer.data.layouts import DATASET_LAYOUTS, build_dataset

__all__ = ["DATASET_LAYOUTS", "DatasetLayoutError", "SegmentationDataset", "build_dataset"]
