"""Cityscapes test-server submission: sharding over ranks, resuming, and the zip's contents."""

from __future__ import annotations

import os
import socket
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from trainer.cityscapes_export import TRAIN_ID_TO_LABEL_ID, write_submission

CITIES = ("aachen", "bonn")


def _images(root: Path, count: int = 5) -> list[Path]:
    paths = []
    for i in range(count):
        city = CITIES[i % 2]
        path = root / city / f"{city}_{i:06d}_000019_leftImg8bit.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        paths.append(path)
    return sorted(paths)


def _prediction(path: Path) -> np.ndarray:
    """A trainId map that identifies the image: every pixel = its index mod 19."""
    index = int(path.name.split("_")[1])
    return np.full((4, 6), index % 19, np.int64)


def _read_zip(zip_path: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(zip_path) as archive:
        return {
            name: cv2.imdecode(np.frombuffer(archive.read(name), np.uint8), cv2.IMREAD_UNCHANGED)
            for name in archive.namelist()
        }


def _check_zip(zip_path: Path, images: list[Path]) -> None:
    contents = _read_zip(zip_path)
    assert list(contents) == [image.name for image in images]
    for image in images:
        expected = TRAIN_ID_TO_LABEL_ID[_prediction(image)]
        np.testing.assert_array_equal(contents[image.name], expected)
    assert not zip_path.with_name(zip_path.name + ".parts").exists()
    assert not zip_path.with_name(zip_path.name + ".partial").exists()


def test_shards_are_predicted_once_each_and_zipped_by_rank_zero(tmp_path):
    images = _images(tmp_path / "test")
    zip_path = tmp_path / "out" / "sub.zip"
    seen: dict[int, list[str]] = {0: [], 1: []}

    def predictor(rank):
        def predict(path):
            seen[rank].append(path.name)
            return torch.from_numpy(_prediction(path))
        return predict

    # rank 1 first: its barrier would wait for rank 0 in a real group; here ranks run in turn
    write_submission(images, predictor(1), zip_path, rank=1, world_size=2)
    assert not zip_path.exists()
    write_submission(images, predictor(0), zip_path, rank=0, world_size=2)
    assert seen[0] == [p.name for p in images[0::2]] and seen[1] == [p.name for p in images[1::2]]
    _check_zip(zip_path, images)


def test_interrupted_submission_resumes_without_predicting_again(tmp_path):
    images = _images(tmp_path / "test")
    zip_path = tmp_path / "sub.zip"
    calls: list[str] = []

    def failing(path):
        if len(calls) == 3:
            raise KeyboardInterrupt  # the job is stopped after three images
        calls.append(path.name)
        return _prediction(path)

    with pytest.raises(KeyboardInterrupt):
        write_submission(images, failing, zip_path)
    assert not zip_path.exists()
    assert len(list((tmp_path / "sub.zip.parts").glob("*.png"))) == 3
    calls.clear()
    write_submission(images, lambda p: calls.append(p.name) or _prediction(p), zip_path)
    assert calls == [p.name for p in images[3:]]
    _check_zip(zip_path, images)


def test_missing_shard_is_reported_and_no_zip_written(tmp_path):
    images = _images(tmp_path / "test", 4)
    zip_path = tmp_path / "sub.zip"
    with pytest.raises(RuntimeError, match="2 of 4 predictions missing"):
        write_submission(images, _prediction, zip_path, rank=0, world_size=2)
    assert not zip_path.exists()


def test_invalid_prediction_and_rank(tmp_path):
    images = _images(tmp_path / "test", 2)
    with pytest.raises(ValueError, match="trainIds must be in 0..18"):
        write_submission(images, lambda p: np.full((2, 2), 19), tmp_path / "a.zip")
    with pytest.raises(ValueError, match="rank 2 outside"):
        write_submission(images, _prediction, tmp_path / "b.zip", rank=2, world_size=2)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world_size: int, port: int, root: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        images = sorted(Path(root, "test").glob("*/*_leftImg8bit.png"))
        write_submission(images, _prediction, Path(root, "sub.zip"), rank=rank,
                         world_size=world_size, barrier=dist.barrier)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_write_one_complete_zip(tmp_path):
    images = _images(tmp_path / "test", 7)
    mp.spawn(_rank_main, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    _check_zip(tmp_path / "sub.zip", images)
