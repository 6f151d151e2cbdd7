"""Verifying copied bytes against the checksum the source states, while they land.

An S3 ETag of 32 hex digits is the MD5 of a single-part upload; the copied bytes are hashed
and compared, and a mismatch is an error (:class:`~segctl.io.source.StagingError`). A multipart
ETag (``<hex>-<parts>``) is the MD5 of the parts' MD5s; S3 does not record the part size, so
the usual ones are tried (the size over the part count rounded up to a whole MiB, then
:data:`MULTIPART_PART_BYTES`: 5, 8, 16, 32, 50 MiB, ...; those that give exactly that many
parts) and the parts' MD5s are computed while the bytes land; no match is a mismatch. When no
candidate part size fits, only the size is verified (logged at debug level). GCS ``md5Hash``
(base64) is verified like an MD5 ETag. Other sources (local files, HTTP) give no content
checksum: the MD5 computed while copying is what the manifest stores (``md5`` is null for
multipart objects verified by parts).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from segctl.io.source import BLOCK_BYTES, SourceFile, StagingError

log = logging.getLogger(__name__)

MIB = 1024 * 1024
# part sizes of common uploaders: 5 MiB (S3's minimum, rclone), 8 MiB (AWS CLI, boto3; doubled
# for more than 10,000 parts), 50 MiB (s3fs' block size)
MULTIPART_PART_BYTES = (5 * MIB, 8 * MIB, 16 * MIB, 32 * MIB, 50 * MIB, 64 * MIB, 128 * MIB,
                        256 * MIB, 512 * MIB, 1024 * MIB)


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
