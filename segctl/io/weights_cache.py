"""The pretrained-weights cache folder: its layout, its index, and the job's side of it.

Recipes name their weights by URL (``model.init_checkpoint``, ``reference.checkpoint``). The
control plane fetches them into this cache (:mod:`segctl.weights`); the job maps each URL to
its cached file with :func:`cached_path`, which never downloads: a file missing from the cache
fails the job at once, naming it.

Layout of the cache folder (``cache.weights_dir`` of the site profile, else
``$SEGCTL_HOME/weights``; on a cluster, a folder the compute nodes share)::

    blobs/sha256/<hex>           the files, named by the SHA-256 of their bytes
    index/<key>.json             one per source URL (key: the first 32 hex digits of the URL's
                                 SHA-256): url, sha256, size (bytes), file_name, fetched_at
                                 (UTC, ISO 8601), checks; written atomically
    partial/<key>.<tag8>.part    a download in progress (tag8: a hash of the source's size and
                                 ETag, as in :mod:`segctl.io.source`)
    partial/<key>.lock           held while the URL is fetched (one download per URL at a time)

Local paths (no ``://``, or ``file://``) are not cached: they are read in place.

Refusals in segctl's words: where the job's ``torch.load(weights_only=True)`` refuses a file,
:func:`load_failure` gives the words the control plane's torch-free check
(:func:`segctl.weights.inspect_weights_file`) uses too (:class:`UnloadableWeightsError`:
which file, that it holds non-tensor objects, that segctl will not load it), never PyTorch's
suggestion to load it with ``weights_only=False``.

Standard library only, so both planes import it cheaply.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from segctl.io.atomic import atomic_write_json
from segctl.io.home import segctl_home

BLOBS = Path("blobs") / "sha256"
INDEX = "index"
PARTIAL = "partial"
_SHOWN_GLOBALS = 3


class WeightsError(RuntimeError):
    """A weights file could not be fetched, verified or loaded; the message names the URL or
    file and the reason."""


class NotCachedError(WeightsError):
    """A job asked for weights that are not in the cache (jobs never download)."""


class UnloadableWeightsError(WeightsError):
    """A weights or checkpoint file segctl will not or cannot load: it holds pickled Python
    objects other than tensors (:func:`non_tensor_message`), or it is not a PyTorch file
    (malformed, truncated, unreadable: :func:`malformed_message`). The message names the file
    and never suggests loading it some other way."""


@dataclass(frozen=True)
class CachedWeights:
    """One URL's entry in the cache.

    Attributes:
        url: the source URL, as the recipe spells it.
        sha256: hex SHA-256 of the file's bytes.
        size: bytes.
        file_name: the last part of the URL's path.
        fetched_at: when it was downloaded (UTC, ISO 8601).
        path: the cached file (``<cache>/blobs/sha256/<sha256>``).
        checks: keys of the model checks this file passed (:func:`check_key`).
    """

    url: str
    sha256: str
    size: int
    file_name: str
    fetched_at: str
    path: Path
    checks: tuple[str, ...] = ()

    @property
    def present(self) -> bool:
        """Whether the cached file exists with the recorded size."""
        try:
            return self.path.stat().st_size == self.size
        except OSError:
            return False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (what ``segctl weights list --json`` prints)."""
        return {"url": self.url, "file_name": self.file_name, "size": self.size,
                "sha256": self.sha256, "fetched_at": self.fetched_at, "path": str(self.path),
                "present": self.present}



# --- names and places --------------------------------------------------------------------------


def default_weights_dir() -> Path:
    """``$SEGCTL_HOME/weights`` (see :func:`segctl.io.home.segctl_home`)."""
    return segctl_home() / "weights"


def is_remote(location: str) -> bool:
    """True for URLs that are fetched into the cache: anything with ``://`` but ``file://``."""
    return "://" in location and not location.startswith("file://")


def local_path(location: str) -> Path:
    """The path of a local location (a path, or a ``file://`` URL)."""
    if location.startswith("file://"):
        return Path(unquote(urlsplit(location).path))
    return Path(location).expanduser()


def url_file_name(url: str) -> str:
    """The last part of the URL's path, without the query (``weights`` when empty)."""
    return unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]) or "weights"



def url_key(url: str) -> str:
    """The name of a URL's index entry and ``.part`` file: 32 hex digits of its SHA-256."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:32]


def blob_path(cache_dir: str | Path, sha256: str) -> Path:
    """``<cache>/blobs/sha256/<sha256>``."""
    return Path(cache_dir) / BLOBS / sha256


def _index_path(cache_dir: str | Path, url: str) -> Path:
    return Path(cache_dir) / INDEX / f"{url_key(url)}.json"



# --- the index -----------------------------------------------------------------------------------


def _entry_from(cache_dir: Path, data: Mapping[str, Any]) -> CachedWeights | None:
    try:
        sha = str(data["sha256"])
        return CachedWeights(
            url=str(data["url"]), sha256=sha, size=int(data["size"]),
            file_name=str(data["file_name"]), fetched_at=str(data.get("fetched_at") or ""),
            path=blob_path(cache_dir, sha), checks=tuple(data.get("checks") or ()),
        )
    except (KeyError, TypeError, ValueError):
        return None


def _read_index_file(cache_dir: Path, path: Path) -> CachedWeights | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return _entry_from(cache_dir, data) if isinstance(data, dict) else None


def read_entry(url: str, cache_dir: str | Path) -> CachedWeights | None:
    """The index entry of ``url`` (whether or not its file is still there), or None."""
    cache_dir = Path(cache_dir)
    entry = _read_index_file(cache_dir, _index_path(cache_dir, url))
    return entry if entry is not None and entry.url == url else None


def lookup(url: str, cache_dir: str | Path) -> CachedWeights | None:
    """The entry of ``url`` when its file is in the cache with the recorded size, else None.
    Reads two small files; no network."""
    entry = read_entry(url, cache_dir)
    return entry if entry is not None and entry.present else None


def list_cached(cache_dir: str | Path) -> list[CachedWeights]:
    """Every index entry of the cache (also those whose file is gone: ``present`` says), by
    file name."""
    cache_dir = Path(cache_dir)
    entries = (_read_index_file(cache_dir, path) for path in (cache_dir / INDEX).glob("*.json"))
    return sorted((e for e in entries if e is not None), key=lambda e: (e.file_name, e.url))


def write_entry(cache_dir: Path, entry: CachedWeights) -> None:
    """Write the index entry of ``entry.url`` (atomically).

    Raises:
        OSError: the index cannot be written.
    """
    atomic_write_json(_index_path(cache_dir, entry.url), {
        "url": entry.url, "sha256": entry.sha256, "size": entry.size,
        "file_name": entry.file_name, "fetched_at": entry.fetched_at,
        "blob": str(BLOBS / entry.sha256), "checks": list(entry.checks),
    })



# --- the job's side --------------------------------------------------------------------------


def cached_path(url: str, cache_dir: str | Path) -> Path:
    """The local file to read for ``url``: its cached copy, or a local path itself. Never
    downloads (the job's side of the cache).

    Raises:
        NotCachedError: ``url`` is not in the cache, or its cached file is gone or has another
            size; the message names the URL and the file, and says to run
            ``segctl weights fetch`` on a node with internet.
        FileNotFoundError: a local path that does not exist.
    """
    if not is_remote(url):
        path = local_path(url)
        if not path.is_file():
            raise FileNotFoundError(f"weights file {path} does not exist")
        return path
    entry = read_entry(url, cache_dir)
    fix = (f"run `segctl weights fetch {url}` (or `segctl weights fetch RECIPE`) on a node with "
           f"internet, with the same cache folder {cache_dir} (jobs never download)")
    if entry is None:
        raise NotCachedError(f"{url_file_name(url)} ({url}) is not in the weights cache: {fix}")
    if not entry.present:
        raise NotCachedError(
            f"the cached file of {entry.file_name} ({url}), {entry.path}, is missing or does not "
            f"have its {entry.size} bytes: {fix}"
        )
    return entry.path



# --- refusals in segctl's words -------------------------------------------------------------


def non_tensor_message(name: str, found: Sequence[str] = ()) -> str:
    """segctl's words for a file whose pickle holds more than tensors: which file, what it
    refers to, and that segctl will not load it (the message of
    :class:`UnloadableWeightsError`).

    Args:
        name: the file as the user knows it (a path, a URL, ``field (path)``).
        found: the Python objects it names beyond tensors (e.g. ``posix.system``), if known.
    """
    what = ""
    if found:
        more = " ..." if len(found) > _SHOWN_GLOBALS else ""
        what = f" ({', '.join(found[:_SHOWN_GLOBALS])}{more})"
    return (f"{name} holds pickled Python objects other than tensors{what}; loading such a file "
            "can run code it carries, so segctl will not load it. Use weights saved as a plain "
            "state dict of tensors")


def malformed_message(name: str, problem: str) -> str:
    """segctl's words for a file that is not a PyTorch weights file it can read; ``problem``
    says why (not a zip archive, cut short, unreadable, ...)."""
    return (f"{name} is not a PyTorch weights file segctl can read: {problem}. Check that it is "
            "the file you meant and that it was copied completely")


def load_failure(name: str, exc: BaseException) -> BaseException:
    """The exception to raise in place of ``exc``, which ``torch.load(..., weights_only=True)``
    raised for the file ``name``.

    Returns:
        An :class:`UnloadableWeightsError` in segctl's words: :func:`non_tensor_message` where
        the weights-only loader met a Python object other than a tensor (naming it), else
        :func:`malformed_message` (cut short, not a PyTorch file, unreadable). Never PyTorch's
        own text, which suggests loading with ``weights_only=False``. A ``FileNotFoundError``
        is returned unchanged.
    """
    if isinstance(exc, FileNotFoundError):
        return exc
    text = str(exc)
    if "Weights only load failed" in text or "WeightsUnpickler" in text:
        found = list(dict.fromkeys(re.findall(r"GLOBAL ([\w.]+)", text)))
        if found or "Unsupported class" in text:
            return UnloadableWeightsError(non_tensor_message(name, found))
        detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
        problem = detail.group(1).strip().rstrip(".") if detail else "an unknown pickle"
        return UnloadableWeightsError(malformed_message(
            name, f"its contents are not a pickle of tensors ({problem})"))
    if isinstance(exc, OSError):
        return UnloadableWeightsError(malformed_message(
            name, f"it cannot be read ({exc.strerror or exc})"))
    if isinstance(exc, EOFError):
        return UnloadableWeightsError(malformed_message(name, "it is empty or cut short"))
    if "central directory" in text or "zip archive" in text:
        return UnloadableWeightsError(malformed_message(
            name, "its zip archive is incomplete or damaged (cut short?)"))
    if "magic number" in text or isinstance(exc, (KeyError, ValueError, pickle.UnpicklingError)):
        return UnloadableWeightsError(malformed_message(
            name, "it is neither a zip archive (PyTorch's format) nor in PyTorch's legacy "
            "format (a web page, or another kind of file?)"))
    detail = re.sub(r"^\[enforce fail at [^\]]*\]\s*\.?\s*", "", text).split("\n", 1)[0][:200]
    return UnloadableWeightsError(malformed_message(
        name, f"its contents are not a PyTorch file ({type(exc).__name__}: {detail})"))
