"""The manifest of a staged tree, ``DEST/.segctl-manifest.json``: what each staged file was
copied from (its identity at the source) and when the local copy was last written.

Format: ``{"version": 1, "source": URL, "files": {rel: entry}}``, where an entry holds the
source identity (``size``, ``etag``, ``mtime``), the checksum fields (``md5``, ``verified``,
``part_bytes`` for a multipart ETag) and ``local_mtime_ns`` of the staged copy. Written
atomically (a temporary file renamed over it); never holds storage options.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MANIFEST_NAME = ".segctl-manifest.json"
MANIFEST_VERSION = 1


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


def write_manifest(dest: Path, source: str, files: Mapping[str, Any]) -> None:
    """Replace ``DEST/.segctl-manifest.json`` atomically with ``files`` (sorted by path) as
    copied from ``source``."""
    text = json.dumps(
        {"version": MANIFEST_VERSION, "source": source, "files": dict(sorted(files.items()))},
        indent=1,
    )
    tmp = dest / f"{MANIFEST_NAME}.{os.getpid()}.{threading.get_ident()}.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, manifest_path(dest))
