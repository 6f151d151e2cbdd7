"""The source side of a copy: open any fsspec URL, list its files with what identifies each
one, and read a file's bytes (one streamed GET per range on S3, ``cat_file`` ranges elsewhere).

- **Identity of a file**: its size plus the source's content tag when the source gives one
  (S3 ``ETag``, GCS ``md5Hash``/``crc32c``), else its modification time (:class:`SourceFile`).
- **Transfers**: on S3 each file (or each segment of a large file) is one GET whose body is
  streamed in blocks of :data:`BLOCK_BYTES`, conditional on the listed ETag, so bytes of
  another version are never mixed in; a file larger than ``split_bytes`` is fetched as
  ``chunk_bytes`` segments, ``streams`` of them at once, yielded in order. Other backends are
  read with ``cat_file`` ranges of ``chunk_bytes``.
- **Credentials** come from where fsspec's backends look (environment, ``~/.aws`` config and
  profiles for s3fs, application-default credentials for gcsfs) and from ``storage_options``
  (e.g. ``endpoint_url``), which are never printed or logged: they may hold secrets.

fsspec is imported inside the functions, at the edge where a URL appears.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from segctl.io.manifest import MANIFEST_NAME

DEFAULT_STREAMS = 4  # ranged requests in flight for one file larger than SPLIT_BYTES
SPLIT_BYTES = 256 * 1024 * 1024  # files larger than this (bytes) are fetched in segments
CHUNK_BYTES = 16 * 1024 * 1024  # bytes per segment (one ranged request) of such a file
BLOCK_BYTES = 4 * 1024 * 1024  # bytes per read from a response body (and per write)
_MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")
_MULTIPART_ETAG = re.compile(r"^[0-9a-f]{32}-([0-9]+)$")


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
