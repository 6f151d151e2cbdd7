"""Staging against a real moto S3 server on 127.0.0.1 and against local folders.

The server's request log counts object reads, so "staging unchanged data again reads only the
listing and the manifest" is checked by counting ``GET /bucket/key`` lines, not by timing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from segctl.cli import app
from segctl.io.checksum import MIB, ContentDigest, multipart_part_sizes
from segctl.io.copy import stage
from segctl.io.manifest import MANIFEST_NAME, read_manifest
from segctl.io.source import SourceFile, StagingError
from trainer.checkpoint_sync import UPLOAD_CLOSE_TIMEOUT_S, CheckpointUploader
from tests.servers import aws_env, moto_server  # noqa: F401  (fixtures)

BUCKET = "datasets"
BIG = "leftImg8bit/big.bin"
CHUNK_BYTES = 1024 * 1024  # small ranged reads, so that an interruption falls mid-file
runner = CliRunner()


def _tree(seed: int = 0, big_bytes: int = 0) -> dict[str, bytes]:
    rng = random.Random(seed)
    files = {
        f"leftImg8bit/train/city/frame_{i:03d}.png": rng.randbytes(rng.randint(100, 5000))
        for i in range(12)
    }
    files.update({f"gtFine/train/city/frame_{i:03d}_labelTrainIds.png": rng.randbytes(300)
                  for i in range(12)})
    files["empty.txt"] = b""
    if big_bytes:
        files[BIG] = rng.randbytes(big_bytes)
    return files


def _upload(server, files: dict[str, bytes], prefix: str = "cityscapes") -> None:
    fs = server.filesystem()
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    fs.pipe({f"{BUCKET}/{prefix}/{rel}": data for rel, data in files.items()})


def _local_tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*") if p.is_file() and p.name != MANIFEST_NAME
    }


def test_stage_restage_and_change_one_object(moto_server, tmp_path):
    files = _tree()
    _upload(moto_server, files)
    src, dst = f"s3://{BUCKET}/cityscapes", tmp_path / "staged"
    options = moto_server.storage_options()

    first = stage(src, dst, storage_options=options, workers=4, progress=False)
    assert _local_tree(dst) == files
    assert sorted(first.copied) == sorted(files) and first.skipped == 0
    assert first.verified == len(files)  # every single-part ETag is an MD5, checked
    manifest = read_manifest(dst)
    entry = manifest["files"]["empty.txt"]
    assert set(entry) >= {"size", "etag", "md5"} and entry["size"] == 0
    assert manifest["files"]["gtFine/train/city/frame_000_labelTrainIds.png"]["etag"] == (
        hashlib.md5(files["gtFine/train/city/frame_000_labelTrainIds.png"]).hexdigest()
    )

    mark = moto_server.log_size()
    again = stage(src, dst, storage_options=options, progress=False)
    assert again.copied == [] and again.skipped == len(files)
    assert moto_server.object_gets(BUCKET, mark) == []  # the listing only: no object read

    changed = "leftImg8bit/train/city/frame_003.png"
    files[changed] = b"new bytes"
    _upload(moto_server, {changed: files[changed]})
    mark = moto_server.log_size()
    third = stage(src, dst, storage_options=options, progress=False)
    assert third.copied == [changed]
    assert moto_server.object_gets(BUCKET, mark) == [f"cityscapes/{changed}"]
    assert _local_tree(dst) == files
    assert not list(dst.rglob("*.part"))


@pytest.mark.parametrize("streams", [1, 3])
def test_server_killed_mid_stage_then_resumed(moto_server, tmp_path, streams):
    """One streamed GET per file (``streams=1``) or ranged segments fetched in parallel: either
    way the ``.part`` file holds a prefix of the object, and the next stage continues it."""
    files = _tree(seed=1, big_bytes=CHUNK_BYTES * 24 + 12345)  # more than socket buffers hold
    _upload(moto_server, files)
    src, dst = f"s3://{BUCKET}/cityscapes", tmp_path / "staged"
    options = {**moto_server.storage_options(), "config_kwargs": {"retries": {"max_attempts": 1}}}
    killed: list[int] = []

    def kill_after_first_chunk(done: int) -> None:
        if done >= CHUNK_BYTES and not killed:
            killed.append(done)
            moto_server.stop(hard=True)

    with pytest.raises(StagingError, match="stage again to continue"):
        stage(src, dst, storage_options=options, workers=1, progress=False,
              on_bytes=kill_after_first_chunk, chunk_bytes=CHUNK_BYTES, streams=streams,
              split_bytes=CHUNK_BYTES)
    assert killed
    big_part = list(dst.glob("leftImg8bit/big.bin.*.part"))
    assert len(big_part) == 1
    kept = big_part[0].stat().st_size
    assert CHUNK_BYTES <= kept < len(files[BIG])
    assert big_part[0].read_bytes() == files[BIG][:kept]  # a prefix, no hole
    assert not (dst / BIG).exists()  # a partial file never takes the final name

    moto_server.start()  # same port, empty (moto keeps nothing): upload the same bytes again
    _upload(moto_server, files)
    moved: list[int] = []
    resumed = stage(src, dst, storage_options=options, workers=2, progress=False,
                    on_bytes=moved.append, chunk_bytes=CHUNK_BYTES, streams=streams,
                    split_bytes=CHUNK_BYTES)
    assert _local_tree(dst) == files  # byte-identical
    total = sum(len(b) for b in files.values())
    assert moved[-1] <= total - kept  # the bytes already in the .part file were not read again
    assert BIG in resumed.copied and resumed.verified == len(resumed.copied)
    assert not list(dst.rglob("*.part"))


def test_corrupt_bytes_are_detected(moto_server, tmp_path):
    files = {"a.bin": os.urandom(CHUNK_BYTES + 1000), "b.txt": b"fine"}
    _upload(moto_server, files, prefix="corrupt")
    src, dst = f"s3://{BUCKET}/corrupt", tmp_path / "staged"
    info = moto_server.filesystem().info(f"{BUCKET}/corrupt/a.bin")
    source = SourceFile(rel="a.bin", path="", size=info["size"], etag=info["ETag"].strip('"'))
    # a partial copy whose bytes differ from the object's: the resumed copy must not pass
    dst.mkdir()
    (dst / f"a.bin.{source.tag8()}.part").write_bytes(b"\0" * 1000)
    with pytest.raises(StagingError, match="checksum mismatch"):
        stage(src, dst, storage_options=moto_server.storage_options(), progress=False,
              chunk_bytes=CHUNK_BYTES)
    assert not (dst / "a.bin").exists() and not list(dst.glob("a.bin*.part"))
    assert (dst / "b.txt").read_bytes() == b"fine"  # the good file was kept
    stage(src, dst, storage_options=moto_server.storage_options(), progress=False)
    assert _local_tree(dst) == files


def _multipart_etag(data: bytes, part_bytes: int) -> str:
    digests = [hashlib.md5(data[i:i + part_bytes]).digest() for i in range(0, len(data), part_bytes)]
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


def test_multipart_etags_are_verified(moto_server, tmp_path):
    """Real multipart uploads (s3fs ``put_file`` with 5 MiB and 8 MiB parts): the part size is
    found among the usual ones and the parts' MD5s checked; a corrupt copy is an error."""
    rng = random.Random(7)
    files = {"five.bin": rng.randbytes(12 * MIB + 123), "eight.bin": rng.randbytes(17 * MIB),
             "small.txt": b"single part"}
    fs = moto_server.filesystem()
    fs.mkdir(BUCKET)
    for rel, data in files.items():
        local = tmp_path / rel
        local.write_bytes(data)
        part_bytes = 8 * MIB if rel == "eight.bin" else 5 * MIB
        fs.put_file(str(local), f"{BUCKET}/multi/{rel}", chunksize=part_bytes)
    etags = {rel: fs.info(f"{BUCKET}/multi/{rel}")["ETag"].strip('"') for rel in files}
    assert etags["five.bin"] == _multipart_etag(files["five.bin"], 5 * MIB)  # a real multipart
    assert etags["eight.bin"] == _multipart_etag(files["eight.bin"], 8 * MIB)
    assert multipart_part_sizes(17 * MIB, 3) == [6 * MIB, 8 * MIB]  # 8 MiB is the second guess

    src, options = f"s3://{BUCKET}/multi", moto_server.storage_options()
    result = stage(src, tmp_path / "good", storage_options=options, progress=False)
    assert result.verified == 3 and _local_tree(tmp_path / "good") == files
    entries = read_manifest(tmp_path / "good")["files"]
    assert entries["five.bin"]["part_bytes"] == 5 * MIB
    assert entries["eight.bin"]["part_bytes"] == 8 * MIB and entries["eight.bin"]["verified"]
    assert entries["small.txt"]["md5"] == hashlib.md5(files["small.txt"]).hexdigest()

    # a partial copy whose bytes differ from the object's: the resumed copy must not pass
    bad = tmp_path / "bad"
    bad.mkdir()
    source = SourceFile(rel="eight.bin", path="", size=len(files["eight.bin"]),
                        etag=etags["eight.bin"])
    (bad / f"eight.bin.{source.tag8()}.part").write_bytes(b"\0" * 1000)
    with pytest.raises(StagingError, match="checksum mismatch.*multipart ETag"):
        stage(src, bad, storage_options=options, progress=False)
    assert not list(bad.glob("eight.bin*")) and (bad / "five.bin").read_bytes() == files["five.bin"]


def test_multipart_etag_without_a_fitting_part_size_checks_the_size_only(caplog):
    data = b"0123456789"
    source = SourceFile(rel="odd.bin", path="", size=len(data), etag="0" * 32 + "-7")
    with caplog.at_level(logging.DEBUG, logger="segctl.io.checksum"):
        digest = ContentDigest(source)
    digest.update(data)
    assert digest.check(Path("/nonexistent")) == {"md5": hashlib.md5(data).hexdigest(),
                                                 "verified": False}
    assert "not verified, only the size" in caplog.text


def test_object_replaced_after_the_listing_is_not_mixed_in(moto_server):
    """Reads are conditional on the listed ETag: bytes of a newer version are refused."""
    import threading

    from segctl.io.source import list_source, open_source, read_source

    _upload(moto_server, {"x.bin": b"old" * 1000}, prefix="race")
    fs, root = open_source(f"s3://{BUCKET}/race", moto_server.storage_options())
    (listed,) = list_source(fs, root)
    _upload(moto_server, {"x.bin": b"new" * 1000}, prefix="race")
    with pytest.raises(OSError, match="pre-condition"):
        b"".join(read_source(fs, listed, 0, threading.Event()))


def test_local_sources_and_deleted_files(tmp_path):
    src = tmp_path / "src"
    for rel, data in _tree(seed=2).items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    for url in (str(src), src.as_uri()):
        dst = tmp_path / ("plain" if "://" not in url else "url")
        result = stage(url, dst, progress=False)
        assert _local_tree(dst) == _local_tree(src) and result.verified == 0
        assert stage(url, dst, progress=False).copied == []
    (src / "empty.txt").unlink()
    stage(str(src), tmp_path / "plain", progress=False)
    assert "empty.txt" not in read_manifest(tmp_path / "plain")["files"]
    with pytest.raises(StagingError, match="does not exist"):
        stage(str(tmp_path / "missing"), tmp_path / "x", progress=False)


def test_cli_stage_keeps_secrets_out_of_every_output(moto_server, tmp_path, caplog):
    _upload(moto_server, _tree(seed=3))
    secret = "S3CR3T-do-not-print-7f1c"
    with caplog.at_level(logging.DEBUG):
        result = runner.invoke(app, [
            "stage", f"s3://{BUCKET}/cityscapes", str(tmp_path / "out"), "--workers", "3",
            "--storage-option", f"endpoint_url={moto_server.url}",
            "--storage-option", f"secret={secret}",
            "--storage-option", "key=testing-key-id",
        ])
    assert result.exit_code == 0, result.output
    assert "25 files, 25 copied" in result.output and "stage:" in result.output  # progress line
    assert "/s" in result.output
    manifest = (tmp_path / "out" / MANIFEST_NAME).read_text()
    everything = result.output + manifest + caplog.text + json.dumps(read_manifest(tmp_path / "out"))
    assert secret not in everything

    bad = runner.invoke(app, ["stage", "s3://x/y", str(tmp_path / "o"), "--storage-option", secret])
    assert bad.exit_code == 2 and secret not in bad.output


# --- checkpoints uploaded as they are written -------------------------------------------------------


def _remote_checkpoints(server, prefix: str) -> dict[str, bytes]:
    fs = server.filesystem()
    return {p.rsplit("/", 1)[-1]: fs.cat_file(p) for p in fs.find(prefix)}


def test_checkpoints_uploaded_during_the_run_and_fetched_on_resume(
        moto_server, real_data, tmp_path, caplog):
    """Each checkpoint reaches the server by the uploader alone (the end-of-job mirror finds
    nothing left to copy), atomically, with remote pruning; a fresh run directory resumes from
    the remote checkpoints."""
    import trainer.entry
    from tests.trainer_runs import make_run_dir, one_frame_cityscapes, small_recipe
    from trainer import checkpoint as ckpt

    moto_server.filesystem().mkdir("ckpts")
    url = "s3://ckpts/runs/upload"
    city = one_frame_cityscapes(real_data / "cityscapes", tmp_path / "cityscapes")
    recipe = small_recipe(
        city, f"sqlite:///{tmp_path / 'mlflow.db'}",
        data={"crop_size": [64, 128], "storage_options": moto_server.storage_options()},
        schedule={"max_iters": 6, "checkpoint_interval": 2, "log_interval": 2},
        train={"batch_size": 1, "checkpoint_dir": url},
    )

    first = make_run_dir(tmp_path / "first", recipe)
    with caplog.at_level(logging.INFO, logger="trainer.checkpoint_sync"):
        assert trainer.entry.run_training(first, stop_after=4)["iteration"] == 4
    assert f"uploaded 0 checkpoint(s) to {url}" in caplog.text  # the mirror had nothing to do
    local = {p.name: p.read_bytes() for p in ckpt.checkpoint_dir(first).glob("*.pt")}
    assert sorted(local) == ["iter_0000002.pt", "iter_0000004.pt"]
    assert _remote_checkpoints(moto_server, "ckpts/runs/upload") == local  # identical bytes
    assert moto_server.filesystem().find("ckpts") == [
        f"ckpts/runs/upload/{name}" for name in sorted(local)
    ]  # no temporary key left

    second = make_run_dir(tmp_path / "second", recipe)  # another node: empty run directory
    with caplog.at_level(logging.INFO):
        result = trainer.entry.run_training(second)
    assert result["iteration"] == 6 and result["finished"]
    assert "resumed from" in caplog.text and "iter_0000004.pt at iteration 4" in caplog.text
    local = {p.name: p.read_bytes() for p in ckpt.checkpoint_dir(second).glob("*.pt")}
    assert sorted(local) == ["final.pt", "iter_0000004.pt", "iter_0000006.pt"]
    remote = _remote_checkpoints(moto_server, "ckpts/runs/upload")
    assert remote == local  # iter_0000002.pt pruned remotely as locally
    assert not [p for p in moto_server.filesystem().find("ckpts") if p.endswith(".tmp")]


def test_uploader_failures_are_logged_not_raised(tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    local = tmp_path / "checkpoints"
    local.mkdir()
    (local / "iter_0000001.pt").write_bytes(b"weights")
    uploader = CheckpointUploader(str(blocker / "remote"), local)
    with caplog.at_level(logging.WARNING):
        uploader.submit(local / "iter_0000001.pt")
        uploader.submit(local / "iter_0000009.pt")  # pruned before its turn: skipped
        assert uploader.close(timeout=30)
    assert uploader.failed == ["iter_0000001.pt"] and uploader.uploaded == []
    assert "not uploaded" in caplog.text

    remote = tmp_path / "remote"
    ok = CheckpointUploader(remote.as_uri(), local)
    (local / "iter_0000002.pt").write_bytes(b"newer")
    ok.submit(local / "iter_0000001.pt")
    ok.submit(local / "iter_0000002.pt")
    (local / "iter_0000001.pt").unlink()  # pruned locally: pruned remotely after the next upload
    ok.submit(local / "iter_0000002.pt")
    assert ok.close()
    assert sorted(p.name for p in remote.iterdir()) == ["iter_0000002.pt"]


def test_uploader_close_does_not_wait_for_a_hung_upload(moto_server, tmp_path, caplog):
    """A server that stops answering (SIGSTOP) hangs the upload; ``close`` gives up after its
    timeout, and callers that pass none get a finite default."""
    import inspect
    import signal
    import time

    assert inspect.signature(CheckpointUploader.close).parameters["timeout"].default == (
        UPLOAD_CLOSE_TIMEOUT_S) < float("inf")
    moto_server.filesystem().mkdir("ckpts")
    local = tmp_path / "checkpoints"
    local.mkdir()
    (local / "iter_0000001.pt").write_bytes(b"weights")
    uploader = CheckpointUploader("s3://ckpts/hung", local, moto_server.storage_options())
    os.kill(moto_server.proc.pid, signal.SIGSTOP)
    try:
        uploader.submit(local / "iter_0000001.pt")
        started = time.monotonic()
        with caplog.at_level(logging.WARNING):
            assert uploader.close(timeout=1.0) is False
        assert time.monotonic() - started < 10
        assert "still running after 1 s" in caplog.text
    finally:
        os.kill(moto_server.proc.pid, signal.SIGCONT)
