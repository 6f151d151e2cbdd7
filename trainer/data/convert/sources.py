"""Input files that may sit in a folder or inside a zip archive (ISPRS, iSAID, LoveDA releases).

A :class:`Source` names one input file either way, so converters read the released archives
directly, without extracting them first.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from trainer.data.convert.common import ConversionError


@dataclass(frozen=True)
class Source:
    """One input file: ``path`` on disk, or ``member`` of the zip archive at ``path``."""

    path: Path
    member: str | None = None

    @property
    def name(self) -> str:
        """The file name (last path component)."""
        return PurePosixPath(self.member).name if self.member else self.path.name

    @property
    def parts(self) -> tuple[str, ...]:
        """Path components inside the archive (or of the file path)."""
        return PurePosixPath(self.member).parts if self.member else self.path.parts

    def __str__(self) -> str:
        return f"{self.path}!{self.member}" if self.member else str(self.path)

    def read_bytes(self) -> bytes:
        """The file's content.

        Raises:
            ConversionError: unreadable file, corrupt archive or missing member.
        """
        try:
            if self.member is None:
                return self.path.read_bytes()
            with zipfile.ZipFile(self.path) as archive:
                return archive.read(self.member)
        except (OSError, zipfile.BadZipFile, KeyError) as exc:
            raise ConversionError(f"{self}: cannot read ({exc})") from None


def scan_sources(root: Path, suffixes: tuple[str, ...]) -> list[Source]:
    """Every file under ``root`` (recursively) ending in one of ``suffixes``, including the
    members of ``*.zip`` archives found there.

    Raises:
        ConversionError: a zip archive is corrupt.
    """
    found: list[Source] = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name.lower().endswith(suffixes):
            found.append(Source(path))
        elif path.is_file() and path.suffix.lower() == ".zip":
            try:
                with zipfile.ZipFile(path) as archive:
                    members = sorted(archive.namelist())
            except zipfile.BadZipFile as exc:
                raise ConversionError(f"{path}: not a readable zip archive ({exc})") from None
            found += [
                Source(path, m) for m in members
                if m.lower().endswith(suffixes) and not m.endswith("/")
                and "__MACOSX" not in m
            ]
    return found
