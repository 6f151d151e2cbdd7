"""Staging: copy a dataset tree from any fsspec URL to a local directory, incrementally.

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
- **Checksums**: an S3 ETag of 32 hex digits is the MD5 of a single-part upload; the copied
  bytes are hashed and compared, and a mismatch is an error (:class:`StagingError`), the
  partial file is removed. A multipart ETag (``<hex>-<parts>``) is the MD5 of the parts' MD5s;
  S3 does not record the part size, so the usual ones are tried (the size over the part count
  rounded up to a whole MiB, then :data:`MULTIPART_PART_BYTES`: 5, 8, 16, 32, 50 MiB, ...; those
  that give exactly that many parts) and the parts' MD5s are computed while the bytes land; no
  match is a mismatch. When no candidate part size fits, only the size is verified (logged at
  debug level). GCS ``md5Hash`` (base64) is verified like an MD5
  ETag. Other sources (local files, HTTP) give no content checksum: the MD5 computed while
  copying is stored in the manifest (``md5`` is null for multipart objects verified by parts).
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
only the standard library and fsspec, so the job (``trainer.entry``) can call it as well.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

log = logging.getLogger(__name__)

MANIFEST_NAME = ".segctl-manifest.json"
MANIFEST_VERSION = 1
DEFAULT_WORKERS = 8
DEFAULT_STREAMS = 4  # ranged requests in flight for one file larger than SPLIT_BYTES
SPLIT_BYTES = 256 * 1024 * 1024  # files larger than this (bytes) are fetched in segments
CHUNK_BYTES = 16 * 1024 * 1024  # bytes per segment (one ranged request) of such a file
BLOCK_BYTES = 4 * 1024 * 1024  # bytes per read from a response body (and per write)
MIB = 1024 * 1024
# part sizes of common uploaders: 5 MiB (S3's minimum, rclone), 8 MiB (AWS CLI, boto3; doubled
# for more than 10,000 parts), 50 MiB (s3fs' block size)
MULTIPART_PART_BYTES = (5 * MIB, 8 * MIB, 16 * MIB, 32 * MIB, 50 * MIB, 64 * MIB, 128 * MIB,
                        256 * MIB, 512 * MIB, 1024 * MIB)
UPLOAD_CLOSE_TIMEOUT_S = 300.0  # how long CheckpointUploader.close waits by default, seconds
NODE_LOCAL = "node-local"
_MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")
_MULTIPART_ETAG = re.compile(r"^[0-9a-f]{32}-([0-9]+)$")
_SAVE_EVERY_S = 1.0


class StagingError(RuntimeError):
    """Staging failed (unreachable source, checksum mismatch, ...); completed files are kept."""


@dataclass(frozen=True)
class SourceFile:
    """One file of the listing: path relative to the source root and what identifies it."""

    rel: str
    path: str  # the backend's path, as fsspec lists it
    size: int
    etag: str | None = None  # content tag from the source (S3 ETag, GCS md5Hash)
    mtime: str | None = None

    def identity(self) -> dict[str, Any]:
        """What the manifest stores and compares (the mtime only without a content tag)."""
        return {"size": self.size, "etag": self.etag, "mtime": None if self.etag else self.mtime}

    def tag8(self) -> str:
        """Short hash of the identity, part of the ``.part`` name."""
        text = json.dumps(self.identity(), sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:8]

    def expected_md5(self) -> str | None:
        """Hex MD5 of the content when the source states it (single-part S3 ETag, GCS md5)."""
        if self.etag is None:
            return None
        if self.etag.startswith("md5:"):
            return self.etag[4:]
        return self.etag if _MD5_ETAG.match(self.etag) else None

    def multipart_parts(self) -> int | None:
        """The part count of an S3 multipart ETag (``<hex>-<parts>``), else None."""
        match = _MULTIPART_ETAG.match(self.etag or "")
        return int(match.group(1)) if match else None


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


# --- progress ------------------------------------------------------------------------------------


class ProgressBar:
    """A plain-text progress line on ``stream`` (stderr): files, bytes, bytes/s.

    On a terminal the line is redrawn at most every 0.2 s; elsewhere a line is printed at most
    every 5 s. ``on_bytes`` (optional) sees every increment, e.g. for tests; ``label`` starts
    the line (``stage``, ``weights``).
    """

    def __init__(self, total_files: int, total_bytes: int, stream: TextIO | None = None,
                 enabled: bool = True, on_bytes: Callable[[int], None] | None = None,
                 label: str = "stage") -> None:
        self.total_files, self.total_bytes = total_files, total_bytes
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.on_bytes = on_bytes
        self.files = 0
        self.bytes = 0
        self.started = time.perf_counter()
        self._last = 0.0
        self._lock = threading.Lock()
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def add(self, nbytes: int = 0, files: int = 0) -> None:
        with self._lock:
            self.bytes += nbytes
            self.files += files
            now = time.perf_counter()
            due = now - self._last >= (0.2 if self._tty else 5.0)
            if self.enabled and due:
                self._last = now
                self._draw(final=False)
        if self.on_bytes is not None and nbytes:
            self.on_bytes(self.bytes)

    def close(self) -> None:
        if self.enabled:
            with self._lock:
                self._draw(final=True)

    def _draw(self, final: bool) -> None:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        line = (
            f"{self.label}: {self.files}/{self.total_files} files  "
            f"{human_bytes(self.bytes)}/{human_bytes(self.total_bytes)}  "
            f"{human_bytes(self.bytes / elapsed)}/s"
        )
        end = "\n" if final or not self._tty else ""
        self.stream.write(("\r" if self._tty else "") + line + end)
        self.stream.flush()


def human_bytes(nbytes: float) -> str:
    """``nbytes`` in decimal units: ``512 B``, ``38.9 MB``, ``4.4 GB``."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(nbytes) < 1000 or unit == "GB":
            return f"{nbytes:.1f} {unit}" if unit != "B" else f"{int(nbytes)} B"
        nbytes /= 1000.0
    return f"{nbytes:.1f} GB"


# --- manifest ------------------------------------------------------------------------------------


def manifest_path(dest: str | Path) -> Path:
    """``DEST/.segctl-manifest.json``."""
    return Path(dest) / MANIFEST_NAME


def read_manifest(dest: str | Path) -> dict[str, Any]:
    """The manifest of a staged tree (``{"version", "source", "files": {rel: entry}}``);
    an empty one when missing or unreadable."""
    try:
        data = json.loads(manifest_path(dest).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"version": MANIFEST_VERSION, "source": None, "files": {}}
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        return {"version": MANIFEST_VERSION, "source": None, "files": {}}
    return data


def _write_manifest(dest: Path, source: str, files: Mapping[str, Any]) -> None:
    text = json.dumps(
        {"version": MANIFEST_VERSION, "source": source, "files": dict(sorted(files.items()))},
        indent=1,
    )
    tmp = dest / f"{MANIFEST_NAME}.{os.getpid()}.{threading.get_ident()}.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, manifest_path(dest))


# --- listing -------------------------------------------------------------------------------------


def open_source(src: str, storage_options: Mapping[str, Any] | None = None):
    """``(filesystem, root path)`` for ``src`` (any fsspec URL or a plain path)."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(src, **dict(storage_options or {}))
    return fs, root.rstrip("/") or root


def _content_tag(info: Mapping[str, Any]) -> str | None:
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return str(etag).strip('"')
    md5 = info.get("md5Hash")  # gcsfs: base64 MD5
    if md5:
        try:
            return "md5:" + base64.b64decode(md5).hex()
        except ValueError:
            return None
    crc = info.get("crc32c")
    return f"crc32c:{crc}" if crc else None


def _mtime(info: Mapping[str, Any]) -> str | None:
    for key in ("LastModified", "mtime", "updated", "last_modified", "created"):
        value = info.get(key)
        if value is not None:
            return str(value)
    return None


def list_source(fs, root: str) -> list[SourceFile]:
    """Every file under ``root`` (or ``root`` itself when it is a file), sorted by path."""
    found = fs.find(root, detail=True)
    base = root
    if not found or set(found) == {root}:  # a single file, or nothing
        if not fs.isfile(root):
            raise FileNotFoundError(root)
        found = {root: fs.info(root)}
        base = root.rsplit("/", 1)[0]
    files = []
    for path, info in found.items():
        if info.get("type", "file") != "file":
            continue
        rel = path[len(base):].lstrip("/") if path.startswith(base) else path.rsplit("/", 1)[-1]
        if not rel or rel == MANIFEST_NAME or rel.endswith(".part"):
            continue
        files.append(file_from_info(rel, path, info))
    return sorted(files, key=lambda f: f.rel)


def file_from_info(rel: str, path: str, info: Mapping[str, Any]) -> SourceFile:
    """A :class:`SourceFile` from what an fsspec backend's ``info`` says of ``path`` (size in
    bytes, 0 when not stated; content tag; modification time)."""
    return SourceFile(rel=rel, path=path, size=int(info.get("size") or 0),
                      etag=_content_tag(info), mtime=_mtime(info))


# --- checksums -----------------------------------------------------------------------------------


def multipart_part_sizes(size: int, parts: int) -> list[int]:
    """Part sizes (bytes) that split ``size`` bytes into exactly ``parts`` parts, from the usual
    choices of uploaders: ``ceil(size / parts)`` rounded up to a whole MiB, then
    :data:`MULTIPART_PART_BYTES`. Empty when none fits."""
    if size <= 0 or parts <= 0:
        return []
    even = -(-size // parts)
    found: list[int] = []
    for part in (-(-even // MIB) * MIB, *MULTIPART_PART_BYTES):
        if -(-size // part) == parts:
            # one part: any size >= the object gives the same digest
            part = max(part, size) if parts == 1 else part
            if part not in found:
                found.append(part)
    return found[:1] if parts == 1 else found


class _PartDigests:
    """MD5s of consecutive ``part_bytes`` parts, fed in order; :meth:`etag` is the S3 multipart
    ETag those parts make (``md5(concat(part md5s))-<parts>``)."""

    def __init__(self, part_bytes: int) -> None:
        self.part_bytes = part_bytes
        self.digests: list[bytes] = []
        self._current = hashlib.md5(usedforsecurity=False)
        self._filled = 0  # bytes of the current part

    def update(self, block: bytes | memoryview) -> None:
        view = memoryview(block)
        while view:
            take = min(len(view), self.part_bytes - self._filled)
            self._current.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == self.part_bytes:
                self.digests.append(self._current.digest())
                self._current = hashlib.md5(usedforsecurity=False)
                self._filled = 0

    def etag(self) -> str:
        digests = self.digests + ([self._current.digest()] if self._filled else [])
        return f"{hashlib.md5(b''.join(digests), usedforsecurity=False).hexdigest()}-{len(digests)}"


class ContentDigest:
    """What verifies one file's bytes, fed in order with :meth:`update`.

    An MD5 of the whole content, except for an S3 multipart ETag for which candidate part sizes
    exist (:func:`multipart_part_sizes`): then the part MD5s for the first candidate, computed as
    the bytes land; the other candidates are tried on the written file only when the first one
    does not match (each candidate costs a pass of MD5 over the file).
    """

    def __init__(self, source: SourceFile) -> None:
        self.source = source
        parts = source.multipart_parts()
        self.candidates = multipart_part_sizes(source.size, parts) if parts else []
        self._parts = _PartDigests(self.candidates[0]) if self.candidates else None
        self._whole = None if self.candidates else hashlib.md5(usedforsecurity=False)
        if parts and not self.candidates:
            log.debug("%s: no usual part size gives %d parts of %d bytes; multipart ETag %s not "
                      "verified, only the size", source.rel, parts, source.size, source.etag)

    def update(self, block: bytes | memoryview) -> None:
        if self._whole is not None:
            self._whole.update(block)
        else:
            self._parts.update(block)

    def check(self, copied: Path) -> dict[str, Any]:
        """The manifest fields ``md5``, ``verified`` (and ``part_bytes`` for a multipart ETag)
        of the bytes fed so far, which are also the content of the file ``copied``.

        Raises:
            StagingError: the bytes do not match the checksum the source states.
        """
        source = self.source
        if self._parts is not None:
            tried = [self._parts]
            for part_bytes in self.candidates[1:]:
                if tried[-1].etag() == source.etag:
                    break
                digest = _PartDigests(part_bytes)
                with open(copied, "rb") as handle:
                    for block in iter(lambda: handle.read(BLOCK_BYTES), b""):
                        digest.update(block)
                tried.append(digest)
            if tried[-1].etag() == source.etag:
                return {"md5": None, "verified": True, "part_bytes": tried[-1].part_bytes}
            listed = ", ".join(f"{d.etag()} with {d.part_bytes} B parts" for d in tried)
            raise StagingError(
                f"{source.rel}: checksum mismatch (source multipart ETag {source.etag}, copied "
                f"bytes {listed}); the object is corrupt or changed while it was copied, or it "
                "was uploaded with parts of none of these sizes (then re-upload it, e.g. with "
                "8 MiB or 50 MiB parts, or copy it as a single part)"
            )
        md5 = self._whole.hexdigest()
        expected = source.expected_md5()
        if expected is not None and expected != md5:
            raise StagingError(
                f"{source.rel}: checksum mismatch (source MD5 {expected}, copied bytes {md5}); "
                "the object is corrupt or changed while it was copied"
            )
        return {"md5": md5, "verified": expected is not None}


# --- reading the source --------------------------------------------------------------------------


def _streams_s3(fs) -> bool:
    """Whether ``fs`` is s3fs (whose GET bodies are read here block by block)."""
    return callable(getattr(fs, "_call_s3", None)) and callable(getattr(fs, "split_path", None))


def _s3_range(fs, source: SourceFile, start: int, end: int, stop: threading.Event,
              block_bytes: int) -> Iterator[bytes]:
    """Bytes ``[start, end)`` of an S3 object from one GET, in blocks of at most
    ``block_bytes``. The GET is conditional on the listed ETag, so a segment of another version
    of the object is never mixed in."""
    from fsspec.asyn import sync

    bucket, key, version = fs.split_path(source.path)
    kwargs: dict[str, Any] = dict(getattr(fs, "req_kw", None) or {})
    if version:
        kwargs["VersionId"] = version
    if start > 0 or end < source.size:
        kwargs["Range"] = f"bytes={start}-{end - 1}"
    if source.etag and not source.etag.startswith(("md5:", "crc32c:")):
        kwargs["IfMatch"] = f'"{source.etag}"'
    want = end - start

    async def open_body():  # the request and the first block in one trip to the event loop
        response = await fs._call_s3("get_object", Bucket=bucket, Key=key, **kwargs)
        body = response["Body"]
        try:
            return body, await body.read(min(block_bytes, want))
        except BaseException:
            body.close()
            raise

    async def close_body():  # on the event loop's thread, which owns the connection
        body.close()

    body, block = sync(fs.loop, open_body)
    got = 0
    try:
        while block:
            got += len(block)
            yield block
            if got >= want:
                break
            if stop.is_set():
                raise StagingError("stopped")
            block = sync(fs.loop, body.read, min(block_bytes, want - got))
    finally:
        sync(fs.loop, close_body)
    if got != want:
        raise StagingError(f"{source.rel}: source ended at byte {start + got} of {source.size}")


def _ranged_reads(fs, source: SourceFile, start: int, end: int, stop: threading.Event,
                  chunk_bytes: int) -> Iterator[bytes]:
    """Bytes ``[start, end)`` with ``cat_file`` reads of at most ``chunk_bytes`` (any backend)."""
    offset = start
    while offset < end:
        if stop.is_set():
            raise StagingError("stopped")
        block = fs.cat_file(source.path, start=offset, end=min(offset + chunk_bytes, end))
        if not block:
            raise StagingError(f"{source.rel}: source ended at byte {offset} of {source.size}")
        offset += len(block)
        yield block


def _read_range(fs, source: SourceFile, start: int, end: int, stop: threading.Event,
                chunk_bytes: int) -> Iterator[bytes]:
    if _streams_s3(fs):
        return _s3_range(fs, source, start, end, stop, min(BLOCK_BYTES, chunk_bytes))
    return _ranged_reads(fs, source, start, end, stop, chunk_bytes)


def read_source(fs, source: SourceFile, start: int, stop: threading.Event,
                chunk_bytes: int = CHUNK_BYTES, streams: int = DEFAULT_STREAMS,
                split_bytes: int = SPLIT_BYTES) -> Iterator[bytes]:
    """The bytes of ``source`` from byte ``start`` to its end, in order, as blocks.

    A file larger than ``split_bytes`` (bytes), with ``streams`` > 1, is fetched as segments of
    ``chunk_bytes`` by ``streams`` threads at once, yielded in order; memory holds at most
    ``streams`` segments. Otherwise one request streams the rest (S3) or ``chunk_bytes`` reads
    follow one another (other backends).
    """
    if start >= source.size:
        return
    if streams <= 1 or source.size <= split_bytes or source.size - start <= chunk_bytes:
        yield from _read_range(fs, source, start, source.size, stop, chunk_bytes)
        return
    bounds = [(a, min(a + chunk_bytes, source.size)) for a in range(start, source.size, chunk_bytes)]

    def fetch(a: int, b: int) -> list[bytes]:
        return list(_read_range(fs, source, a, b, stop, chunk_bytes))

    pool = ThreadPoolExecutor(max_workers=streams, thread_name_prefix="stage-range")
    try:
        pending = [pool.submit(fetch, a, b) for a, b in bounds[:streams]]
        following = iter(bounds[streams:])
        while pending:
            blocks = pending.pop(0).result()
            nxt = next(following, None)
            if nxt is not None:
                pending.append(pool.submit(fetch, *nxt))
            yield from blocks
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


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
            _write_manifest(dest, src, entries)
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
                _write_manifest(dest, src, entries)
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
            _write_manifest(dest, src, entries)
        bar.close()
    result.seconds = time.perf_counter() - started
    if failures:
        more = f" (and {len(failures) - 3} more)" if len(failures) > 3 else ""
        raise StagingError(
            f"staging {src} failed for {len(failures)} file(s){more}: " + "; ".join(failures[:3])
            + f". {len(result.copied)} files completed; stage again to continue."
        )
    return result


# --- the job's side: where a remote root is staged -------------------------------------------------


def node_local_dir(scratch_dir: str | None = None) -> Path:
    """``scratch_dir`` if given, else ``$TMPDIR``, else the system temporary folder."""
    import tempfile

    return Path(scratch_dir or os.environ.get("TMPDIR") or tempfile.gettempdir()).expanduser()


def staging_target(root: str, stage_to: str | None, scratch_dir: str | None, name: str) -> Path:
    """The local directory a remote ``root`` is staged into.

    ``stage_to`` is a directory, or ``"node-local"`` (also the default for remote roots):
    ``<scratch>/segctl-data/<name>-<hash8 of the root URL>``.
    """
    if stage_to and stage_to != NODE_LOCAL:
        return Path(stage_to).expanduser()
    tag = hashlib.sha1(root.encode()).hexdigest()[:8]
    return node_local_dir(scratch_dir) / "segctl-data" / f"{name}-{tag}"


def stage_data_root(root: str, stage_to: str | None, scratch_dir: str | None,
                    storage_options: Mapping[str, Any], name: str,
                    workers: int = DEFAULT_WORKERS) -> str:
    """Stage a remote dataset root at job start and return the local root to read from.

    A local root (no ``://``) with no ``stage_to`` is returned unchanged; a local root with
    ``stage_to`` is copied there too (e.g. from shared storage to node-local scratch).
    """
    if "://" not in root and not stage_to:
        return root
    if root.startswith("file://") and not stage_to:
        return root[len("file://"):]
    target = staging_target(root, stage_to, scratch_dir, name)
    result = stage(root, target, workers=workers, storage_options=storage_options,
                   progress=False)
    log.info("%s", result.summary())
    return str(target)


# --- checkpoints on remote storage ------------------------------------------------------------------


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


def mirror_checkpoints(local_dir: str | Path, url: str,
                       storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """Upload every ``*.pt`` in ``local_dir`` that the remote folder lacks or has in another
    size (atomically, :func:`upload_atomic`); returns the uploaded names."""
    local_dir = Path(local_dir)
    if not local_dir.is_dir():
        return []
    fs, root = open_source(url, storage_options)
    try:
        remote = {p.rsplit("/", 1)[-1]: int(i.get("size") or 0)
                  for p, i in fs.find(root, detail=True).items()}
    except FileNotFoundError:
        remote = {}
    uploaded = []
    for path in sorted(local_dir.glob("*.pt")):
        if remote.get(path.name) != path.stat().st_size:
            upload_atomic(path, f"{root}/{path.name}", fs=fs)
            uploaded.append(path.name)
    return uploaded


def fetch_checkpoints(url: str, local_dir: str | Path,
                      storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """Download the remote ``*.pt`` checkpoints missing locally (for resume and evaluation);
    returns their names. A missing remote folder fetches nothing."""
    fs, root = open_source(url, storage_options)
    try:
        found = fs.find(root, detail=True)
    except FileNotFoundError:
        return []
    local_dir = Path(local_dir)
    fetched = []
    for path, info in sorted(found.items()):
        name = path.rsplit("/", 1)[-1]
        if not name.endswith(".pt") or (local_dir / name).exists():
            continue
        local_dir.mkdir(parents=True, exist_ok=True)
        part = local_dir / f".{name}.part"
        fs.get_file(path, str(part))
        os.replace(part, local_dir / name)
        fetched.append(name)
    return fetched


_ITER_NAME = re.compile(r"^iter_(\d{7,})\.pt$")


class CheckpointUploader:
    """Copies each checkpoint to ``url`` right after it is written locally, from one background
    thread fed by a queue, so that training waits only for the enqueue.

    Every upload is atomic on the remote side (:func:`upload_atomic`). After a successful upload
    of an ``iter_*.pt`` the remote ``iter_*.pt`` that the local folder no longer holds are
    deleted (remote pruning follows local pruning); remote ones newer than the newest local one,
    and anything that is not an ``iter_*.pt`` (``final.pt``), are never deleted. A file pruned
    locally before its turn came is skipped. Failures are logged, never raised: the local
    checkpoints remain and the end-of-job mirror (:func:`mirror_checkpoints`) catches up.
    :meth:`close` drains the queue and joins the thread; call it before the job exits.
    """

    _STOP = object()

    def __init__(self, url: str, local_dir: str | Path,
                 storage_options: Mapping[str, Any] | None = None) -> None:
        import queue

        self.url = url
        self.local_dir = Path(local_dir)
        self.storage_options = dict(storage_options or {})
        self.uploaded: list[str] = []
        self.failed: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._fs = None
        self._root = ""

    def submit(self, path: str | Path) -> None:
        """Queue ``path`` (a file in the local checkpoint folder) for upload; returns at once."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="checkpoint-upload",
                                                daemon=True)
                self._thread.start()
        self._queue.put(Path(path))

    def close(self, timeout: float | None = UPLOAD_CLOSE_TIMEOUT_S) -> bool:
        """Wait for every queued upload, then stop the thread.

        Args:
            timeout: the longest wait, in seconds (default :data:`UPLOAD_CLOSE_TIMEOUT_S`), so a
                hung upload cannot hold the job's exit; None waits without limit.

        Returns:
            False when ``timeout`` passed first: the uploads left are abandoned to the
            (daemon) thread, which dies with the process; the end-of-job mirror
            (:func:`mirror_checkpoints`) or the next run catches up.
        """
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return True
        pending = self._queue.qsize()
        if pending:
            log.info("waiting for %d checkpoint upload(s) to %s", pending, self.url)
        self._queue.put(self._STOP)
        thread.join(timeout)
        if thread.is_alive():
            log.warning("checkpoint uploads to %s still running after %.0f s; not waiting longer",
                        self.url, timeout)
            return False
        return True

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is self._STOP:
                    return
                self._upload(item)
            finally:
                self._queue.task_done()

    def _upload(self, path: Path) -> None:
        try:
            if self._fs is None:
                self._fs, self._root = open_source(self.url, self.storage_options)
            if not path.is_file():
                log.debug("%s was pruned before its upload", path.name)
                return
            started = time.perf_counter()
            upload_atomic(path, f"{self._root}/{path.name}", fs=self._fs)
            self.uploaded.append(path.name)
            log.info("uploaded %s to %s in %.1f s", path.name, self.url,
                     time.perf_counter() - started)
        except FileNotFoundError:
            if not path.exists():  # pruned locally while it was being read
                log.debug("%s was pruned during its upload", path.name)
                return
            self._failed(path, *sys.exc_info()[:2])
            return
        except Exception as exc:
            self._failed(path, type(exc), exc)
            return
        if _ITER_NAME.match(path.name):
            try:
                self._prune()
            except Exception as exc:
                log.warning("old checkpoints at %s not pruned: %s: %s", self.url,
                            type(exc).__name__, exc)

    def _failed(self, path: Path, kind, exc) -> None:
        self.failed.append(path.name)
        log.warning("checkpoint %s not uploaded to %s: %s: %s", path.name, self.url,
                    getattr(kind, "__name__", kind), exc)

    def _prune(self) -> list[str]:
        local = {int(m.group(1)) for p in self.local_dir.glob("iter_*.pt")
                 if (m := _ITER_NAME.match(p.name))}
        if not local:
            return []
        newest = max(local)
        fs, root = self._fs, self._root
        fs.invalidate_cache(root)
        deleted = []
        for path in fs.find(root):
            name = path.rsplit("/", 1)[-1]
            match = _ITER_NAME.match(name)
            if match and int(match.group(1)) not in local and int(match.group(1)) < newest:
                fs.rm_file(path)
                deleted.append(name)
        if deleted:
            log.info("pruned %s at %s", ", ".join(sorted(deleted)), self.url)
        return deleted


def checkpoint_uploader(recipe, run_dir: str | Path, enabled: bool = True) -> CheckpointUploader | None:
    """The job's (rank 0) :class:`CheckpointUploader` for ``train.checkpoint_dir``; None when
    the recipe has none or ``enabled`` is False."""
    url = recipe.train.checkpoint_dir
    if not url or not enabled:
        return None
    return CheckpointUploader(url, Path(run_dir) / "checkpoints", recipe.data.storage_options)


# --- what the job calls (trainer.entry) ------------------------------------------------------------


def stage_job_inputs(recipe, run_dir: str | Path):
    """At job start: stage a remote (or ``stage_to``) data root and fetch checkpoints kept at
    ``train.checkpoint_dir`` that the run directory lacks; returns the recipe reading from the
    local root. Ranks sharing a target take turns under a file lock: the first copies, the
    others only list. The returned recipe is for this process only (``recipe.json`` keeps the
    original root)."""
    import fcntl

    data = recipe.data
    root = data.root
    if "://" in root or data.stage_to:
        target = staging_target(root, data.stage_to, data.scratch_dir, recipe.data.dataset)
        target.mkdir(parents=True, exist_ok=True)
        with open(target / ".segctl-stage.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                root = stage_data_root(root, data.stage_to or NODE_LOCAL, data.scratch_dir,
                                       data.storage_options, recipe.data.dataset)
            except StagingError:
                raise
            except Exception as exc:  # say what failed without the options (may hold secrets)
                raise StagingError(f"staging {data.root} failed: {type(exc).__name__}: {exc}") from None
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    if recipe.train.checkpoint_dir:
        fetched = fetch_checkpoints(recipe.train.checkpoint_dir, Path(run_dir) / "checkpoints",
                                    data.storage_options)
        if fetched:
            log.info("fetched %d checkpoint(s) from %s", len(fetched), recipe.train.checkpoint_dir)
    return recipe.model_copy(update={"data": data.model_copy(update={"root": root})})


def mirror_job_checkpoints(recipe, run_dir: str | Path, enabled: bool = True) -> None:
    """At job end (rank 0): copy the checkpoints that ``train.checkpoint_dir`` still lacks (a
    catch-up after :class:`CheckpointUploader`, which uploads each one as it is written).
    Failures are logged, never raised: the local checkpoints remain."""
    url = recipe.train.checkpoint_dir
    if not url or not enabled:
        return
    try:
        uploaded = mirror_checkpoints(Path(run_dir) / "checkpoints", url,
                                      recipe.data.storage_options)
        log.info("uploaded %d checkpoint(s) to %s", len(uploaded), url)
    except Exception as exc:
        log.warning("checkpoints not copied to %s: %s: %s", url, type(exc).__name__, exc)
