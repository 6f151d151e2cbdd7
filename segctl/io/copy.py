"""The copy engine: copy a dataset tree from any fsspec URL to a local directory, incrementally.

``stage(src, dst)`` lists ``src`` once, compares the listing with the manifest of the staged
tree (``DST/.segctl-manifest.json``) and copies only what is new or changed, with a pool of
threads. Staging unchanged data again costs one listing and one manifest read.

- **Identity of a file**: its size plus the source's content tag when the source gives one
  (S3 ``ETag``, GCS ``md5Hash``/``crc32c``), else its modification time. A re-uploaded object
  with the same bytes keeps its S3 ETag, so it is not copied again. The staged copy is
  trusted while its size and modification time (ns) are those recorded when it was copied; a
  file changed or removed in the staged tree is copied again.
- **Partial files never take the final name**: bytes go to ``<name>.<tag8>.part`` (``tag8``
  derived from the file's identity) and are renamed with ``os.replace`` once complete and
  verified. An interrupted stage leaves its completed files in the manifest (written
  atomically every second and at the end, also when the stage fails) and its ``.part`` files
  on disk; the next stage skips the first and continues the second with ranged reads from
  where they stopped (the name says whether the partial bytes belong to the same version).
- **Checksums** (:mod:`segctl.io.checksum`): an MD5 or S3 multipart ETag, or a GCS
  ``md5Hash``, is checked on the copied bytes as they land; a mismatch is an error
  (:class:`StagingError`) and the partial file is removed. Other sources give no content
  checksum: the MD5 computed while copying is stored in the manifest.
- **Transfers**: on S3 each file (or each segment of a large file) is one GET whose body is
  streamed to the ``.part`` file in blocks of :data:`BLOCK_BYTES`; a file larger than
  ``split_bytes`` is fetched as ``chunk_bytes`` segments, ``streams`` of them at once, appended in
  order (so a ``.part`` file is always a prefix of the object). Smaller files take one request
  each: the pool's workers already keep many requests in flight, and every extra request costs
  a round trip. Other backends are read with ``cat_file`` ranges of ``chunk_bytes``. Files are not fsynced one by one unless
  ``durable=True`` (an fsync costs milliseconds per file; a staged tree is a cache of the
  source, and the size check of the next stage catches truncated files after a crash).
- **Credentials** come from where fsspec's backends look (environment, ``~/.aws`` config and
  profiles for s3fs, application-default credentials for gcsfs) and from ``storage_options``
  (e.g. ``endpoint_url``). Storage options are never printed, logged or written to the manifest:
  they may hold secrets.

fsspec is imported inside the functions, at the edge where a URL appears. This module uses
only the standard library and fsspec, so both planes call it (``segctl stage``, the weights
cache, and the job's stage-in and checkpoint copies).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from segctl.io.checksum import ContentDigest
from segctl.io.manifest import read_manifest, write_manifest
from segctl.io.progress import ProgressBar, human_bytes
from segctl.io.source import (
    BLOCK_BYTES,
    CHUNK_BYTES,
    DEFAULT_STREAMS,
    SPLIT_BYTES,
    SourceFile,
    StagingError,
    list_source,
    open_source,
    read_source,
)

log = logging.getLogger(__name__)

DEFAULT_WORKERS = 8
_SAVE_EVERY_S = 1.0


@dataclass
class StageResult:
    """What a stage did."""

    source: str
    dest: Path
    files: int = 0
    copied: list[str] = field(default_factory=list)
    skipped: int = 0
    bytes_total: int = 0
    bytes_copied: int = 0
    seconds: float = 0.0
    verified: int = 0

    def summary(self) -> str:
        rate = self.bytes_copied / self.seconds if self.seconds > 0 else 0.0
        return (
            f"staged {self.source} -> {self.dest}: {self.files} files, {len(self.copied)} copied "
            f"({human_bytes(self.bytes_copied)}, {human_bytes(rate)}/s), "
            f"{self.skipped} unchanged, "
            f"{self.verified} checksums verified, {self.seconds:.1f} s"
        )


# --- staging -------------------------------------------------------------------------------------


def _safe_target(dest: Path, rel: str) -> Path:
    """``dest / rel`` where ``rel`` is a relative path that stays inside ``dest`` (``dest``
    resolved; checked on the text, without a file system call)."""
    parts = rel.split("/")
    if rel.startswith("/") or "\\" in rel or any(p in ("", ".", "..") for p in parts):
        raise StagingError(f"source path {rel!r} would be written outside {dest}")
    return dest.joinpath(*parts)


def _unchanged(entry: Mapping[str, Any] | None, source: SourceFile, target: Path) -> bool:
    """Whether the staged ``target`` still is the copy the manifest ``entry`` records of
    ``source``: same source identity, and the local file has the size and modification time
    (ns) it had when copied, so a file changed or removed in the staged tree is copied again.
    Entries written before ``local_mtime_ns`` was recorded are judged by the size alone."""
    if not entry or (entry.get("size"), entry.get("etag"), entry.get("mtime")) != (
            source.size, source.etag, None if source.etag else source.mtime):
        return False
    try:
        stat = os.stat(target)
    except OSError:
        return False
    recorded = entry.get("local_mtime_ns")
    return stat.st_size == source.size and recorded in (None, stat.st_mtime_ns)


class _PartFiles:
    """The ``.part`` files already in the destination's folders, one directory scan per folder."""

    def __init__(self) -> None:
        self._seen: dict[Path, list[str]] = {}
        self._lock = threading.Lock()

    def of(self, target: Path) -> list[Path]:
        """Partial files of ``target`` (``<name>.*.part``) that were there when its folder was
        first looked at."""
        folder = target.parent
        with self._lock:
            names = self._seen.get(folder)
            if names is None:
                try:
                    names = [n for n in os.listdir(folder) if n.endswith(".part")]
                except OSError:
                    names = []
                self._seen[folder] = names
        prefix = target.name + "."
        return [folder / n for n in names if n.startswith(prefix)]


def download_part(fs, source: SourceFile, target: Path, bar: ProgressBar, stop: threading.Event,
                  digests: Sequence[Any] = (), chunk_bytes: int = CHUNK_BYTES,
                  streams: int = DEFAULT_STREAMS, split_bytes: int = SPLIT_BYTES,
                  part_files: _PartFiles | None = None, durable: bool = False) -> Path:
    """Bring ``<target>.<tag8>.part`` to the whole content of ``source`` and return its path.

    A ``.part`` file of the same version (same ``tag8``) is continued from its size with ranged
    reads; those of other versions are deleted. Every byte of the file, those already there
    first, is fed in order to each of ``digests`` (objects with ``update(bytes)``, e.g.
    :class:`ContentDigest` or a ``hashlib`` hash). The caller verifies and renames the file.

    Raises:
        StagingError: the copy does not have the listed size (the ``.part`` file is removed),
            or the source ended early (the ``.part`` file keeps what arrived, for a later
            resume).
        Whatever the backend raises for an unreachable source (the ``.part`` file is kept).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f"{target.name}.{source.tag8()}.part")
    existing = (part_files or _PartFiles()).of(target)
    for stale in existing:
        if stale != part:
            stale.unlink(missing_ok=True)  # a partial of an older version
    offset = 0
    if part in existing:
        offset = part.stat().st_size
        if offset > source.size:
            part.unlink()
            offset = 0
        elif offset:
            with open(part, "rb") as handle:  # continue the hashes over the bytes already there
                for block in iter(lambda: handle.read(BLOCK_BYTES), b""):
                    for digest in digests:
                        digest.update(block)
            log.info("resuming %s at byte %d", source.rel, offset)
    with open(part, "ab") as handle:
        for block in read_source(fs, source, offset, stop, chunk_bytes, streams, split_bytes):
            handle.write(block)
            for digest in digests:
                digest.update(block)
            bar.add(len(block))
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    size = part.stat().st_size
    if size != source.size:
        part.unlink(missing_ok=True)
        raise StagingError(f"{source.rel}: copied {size} bytes, the source lists {source.size}")
    return part


def _copy_one(fs, source: SourceFile, target: Path, bar: ProgressBar, stop: threading.Event,
              chunk_bytes: int = CHUNK_BYTES, streams: int = DEFAULT_STREAMS,
              split_bytes: int = SPLIT_BYTES, part_files: _PartFiles | None = None,
              durable: bool = False) -> dict[str, Any]:
    """Copy one file to ``target`` via its ``.part`` file; returns its manifest entry."""
    digest = ContentDigest(source)
    part = download_part(fs, source, target, bar, stop, (digest,), chunk_bytes, streams,
                         split_bytes, part_files, durable)
    try:
        checked = digest.check(part)
    except StagingError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, target)
    bar.add(files=1)
    # the local file's modification time: a later change of the staged copy is then noticed
    return {**source.identity(), **checked, "local_mtime_ns": os.stat(target).st_mtime_ns}


def stage(
    src: str,
    dest: str | Path,
    *,
    workers: int = DEFAULT_WORKERS,
    storage_options: Mapping[str, Any] | None = None,
    progress: bool = True,
    stream: TextIO | None = None,
    on_bytes: Callable[[int], None] | None = None,
    fs=None,
    chunk_bytes: int = CHUNK_BYTES,
    streams: int = DEFAULT_STREAMS,
    split_bytes: int = SPLIT_BYTES,
    durable: bool = False,
) -> StageResult:
    """Copy the tree at ``src`` (any fsspec URL or path) into the local directory ``dest``.

    Args:
        src: the source root, e.g. ``s3://bucket/cityscapes`` or ``/data/cityscapes``.
        dest: the local directory (created when missing).
        workers: files copied at once (threads).
        storage_options: passed to the fsspec backend (e.g. ``{"endpoint_url": ...}``);
            never printed or stored.
        progress: draw a progress line on ``stream`` (stderr).
        on_bytes: called with the running count of copied bytes.
        fs: an already opened filesystem for ``src`` (then ``src`` is its root path).
        chunk_bytes: bytes per segment (ranged request) of a file larger than ``split_bytes``,
            and per ``cat_file`` read on backends other than S3.
        streams: segments of one such file fetched at once (ranged requests in flight per
            file); memory holds up to ``streams * chunk_bytes`` bytes per large file. 1 reads
            every file with a single request.
        split_bytes: files larger than this (bytes) are fetched in segments.
        durable: fsync every file before it takes its final name (slower: an fsync per file).

    Returns:
        A :class:`StageResult`.

    Raises:
        StagingError: a file could not be copied or failed its checksum; the manifest then
            records every file completed so far, so the next stage continues.
    """
    started = time.perf_counter()
    if fs is None:
        fs, root = open_source(src, storage_options)
    else:
        root = src
    dest = Path(dest).expanduser().resolve()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        listing = list_source(fs, root)
    except FileNotFoundError:
        raise StagingError(f"nothing to stage: {src} does not exist") from None
    except Exception as exc:
        raise StagingError(f"cannot list {src}: {type(exc).__name__}: {exc}") from None
    manifest = read_manifest(dest)
    known: dict[str, Any] = manifest["files"] if manifest.get("source") in (None, src) else {}
    entries = {rel: e for rel, e in known.items() if isinstance(e, dict)}
    result = StageResult(source=src, dest=dest, files=len(listing),
                         bytes_total=sum(f.size for f in listing))
    todo = []
    for source in listing:
        target = _safe_target(dest, source.rel)
        if _unchanged(entries.get(source.rel), source, target):
            result.skipped += 1
        else:
            todo.append((source, target))
    listed = {f.rel for f in listing}
    entries = {rel: e for rel, e in entries.items() if rel in listed}  # gone from the source
    if not todo:
        if set(entries) != set(known):
            write_manifest(dest, src, entries)
        result.seconds = time.perf_counter() - started
        return result

    bar = ProgressBar(len(todo), sum(s.size for s, _ in todo), stream, progress, on_bytes)
    lock = threading.Lock()
    stop = threading.Event()
    last_save = [time.monotonic()]
    part_files = _PartFiles()

    def done(source: SourceFile, entry: dict[str, Any]) -> None:
        with lock:
            entries[source.rel] = entry
            result.copied.append(source.rel)
            result.bytes_copied += source.size
            result.verified += int(entry["verified"])
            if time.monotonic() - last_save[0] >= _SAVE_EVERY_S:
                write_manifest(dest, src, entries)
                last_save[0] = time.monotonic()

    def task(source: SourceFile, target: Path) -> None:
        done(source, _copy_one(fs, source, target, bar, stop, chunk_bytes, streams, split_bytes,
                               part_files, durable))

    failures: list[str] = []
    # largest first: the long transfers start early and the small ones fill in around them
    todo.sort(key=lambda item: -item[0].size)
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="stage") as pool:
            futures = {pool.submit(task, s, t): s for s, t in todo}
            finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
            if any(f.exception() is not None for f in finished):
                stop.set()
                for future in futures:
                    future.cancel()
            for future, source in futures.items():
                if future.cancelled():
                    continue
                exc = future.exception()
                if exc is not None and str(exc) != "stopped":
                    failures.append(f"{source.rel}: {type(exc).__name__}: {exc}")
    finally:
        with lock:
            write_manifest(dest, src, entries)
        bar.close()
    result.seconds = time.perf_counter() - started
    if failures:
        more = f" (and {len(failures) - 3} more)" if len(failures) > 3 else ""
        raise StagingError(
            f"staging {src} failed for {len(failures)} file(s){more}: " + "; ".join(failures[:3])
            + f". {len(result.copied)} files completed; stage again to continue."
        )
    return result


# --- one file to remote storage -----------------------------------------------------------------


def upload_atomic(local: str | Path, url: str, storage_options: Mapping[str, Any] | None = None,
                  fs=None) -> str:
    """Copy a local file to ``url`` so that readers never see a partial object.

    The bytes go to ``<url>.<random>.tmp`` first, then are moved to the final key (on object
    stores a server-side copy plus delete; on file systems a rename). Returns ``url``.
    """
    import secrets

    if fs is None:
        fs, path = open_source(url, storage_options)
    else:
        path = url
    tmp = f"{path}.{secrets.token_hex(4)}.tmp"
    parent = path.rsplit("/", 1)[0]
    if parent and parent != path:
        fs.makedirs(parent, exist_ok=True)
    fs.put_file(str(local), tmp)
    try:
        fs.mv(tmp, path)
    except BaseException:
        try:
            fs.rm_file(tmp)
        except Exception:
            pass
        raise
    return url
