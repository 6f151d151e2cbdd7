"""Pretrained weights: fetching them into the shared, content-addressed cache, and checking
them, so that jobs never download.

Recipes name their weights by URL: ``model.init_checkpoint`` (the pretrained backbone or model
training starts from) and ``reference.checkpoint`` (the published trained model). Compute nodes
often have no internet, so the files are fetched on a node that has it (``segctl weights
fetch``; ``segctl submit`` and ``segctl eval --checkpoint URL`` fetch what their job needs before
submitting it), and the job maps each URL to its cached file with
:func:`segctl.io.weights_cache.cached_path`, which never downloads. The cache's layout, its
index and the job's side of it are :mod:`segctl.io.weights_cache`.

Downloads go through fsspec (``https://``, ``http://``, ``s3://``, any fsspec URL) with the
copy engine of :mod:`segctl.io` (:func:`~segctl.io.copy.download_part`): bytes land in
the ``.part`` file, an interrupted download continues from where it stopped with ranged reads
(HTTP ``Range``) when fetched again, and a progress line goes to stderr. Local paths (no
``://``, or ``file://``) are not cached: they are read in place.

Verification: the SHA-256 of every file is computed while it lands and recorded. Where the
file name carries a hash (``name-<hex>.ext``, six or more hex digits after the last ``-``: the
leading digits of the file's SHA-256, the torch.hub / open-mmlab / timm convention, e.g.
``hrnetv2_w18-00eb2006.pth``), a mismatch is an error (:class:`WeightsError`): the ``.part`` file
is removed and nothing enters the cache. A single-part S3 ETag (an MD5) is checked as staging
checks it. A second fetch of a cached URL reads the index and the blob's size, and sends no
request at all.

Refusals: :func:`inspect_weights_file` checks a file without torch and without unpickling
anything (a regular readable file; a zip archive with ``data.pkl``, or PyTorch's legacy format;
a pickle naming no Python object beyond the tensor rebuilders ``weights_only`` admits), so a
bad local ``model.init_checkpoint`` or ``--checkpoint`` fails at submission in milliseconds.
Where the job's ``torch.load(weights_only=True)`` refuses a file,
:func:`segctl.io.weights_cache.load_failure` gives the same words
(:class:`~segctl.io.weights_cache.UnloadableWeightsError`: which file, that it holds
non-tensor objects, that segctl will not load it), never PyTorch's suggestion to load it with
``weights_only=False``.

Checks (``checks`` in the index): :func:`check_loads` loads a file the way the job will
(``torch.load(weights_only=True)``, the converters of
:func:`trainer.models.converters.pretrained.load_pretrained`) into the recipe's model built on
PyTorch's meta device; a success is recorded under a key of the model settings and the model
code's fingerprint, so the next submission of the same model skips it.

This module imports only the standard library and :mod:`segctl.io` at import time (fsspec,
torch and the trainer inside the functions that need them), so ``segctl --help`` imports it
cheaply.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from segctl.io.weights_cache import (
    PARTIAL,
    CachedWeights,
    UnloadableWeightsError,
    WeightsError,
    blob_path,
    default_weights_dir,
    is_remote,
    local_path,
    lookup,
    malformed_message,
    non_tensor_message,
    read_entry,
    url_file_name,
    url_key,
    write_entry,
)

if TYPE_CHECKING:
    from segctl.recipe import Recipe
    from segctl.recipe.profile import SiteProfile

log = logging.getLogger(__name__)

SIZE_PROBE_TIMEOUT_S = 5.0  # how long a dry run waits for a remote size, seconds
#: The hash in a file name: ``-<6+ hex digits>`` right before the extension.
_NAME_HASH = re.compile(r"-([0-9a-f]{6,})\.[A-Za-z0-9]+$")
_META_COPY_WARNING = r".*copying from a non-meta parameter.*"

#: What a weights file is for: ``init`` (``model.init_checkpoint``: a backbone or a whole
#: model, as training loads it) or ``full`` (a whole trained segmentor, as evaluation loads it).
USES = ("init", "full")


@dataclass(frozen=True)
class WeightsFile:
    """A weights file a recipe or a job needs.

    Attributes:
        url: a URL or a local path, as the recipe (or ``--checkpoint``) spells it.
        use: ``init`` or ``full`` (see :data:`USES`).
        field: where it comes from, e.g. ``model.init_checkpoint``.
    """

    url: str
    use: str
    field: str

    @property
    def remote(self) -> bool:
        """Whether it is fetched into the cache (a URL other than ``file://``)."""
        return is_remote(self.url)


@dataclass
class FetchResult:
    """What :func:`fetch` did.

    Attributes:
        entry: the cache entry.
        downloaded: whether bytes were downloaded (False when the URL was cached already).
        resumed_at: bytes an interrupted earlier fetch had left in the ``.part`` file, which
            this one continued from (0 for a fresh download).
        seconds: wall time of the download.
    """

    entry: CachedWeights
    downloaded: bool = False
    resumed_at: int = 0  # bytes already in the .part file when this download started
    seconds: float = 0.0


# --- names and places --------------------------------------------------------------------------


def weights_dir(profile: SiteProfile | None = None) -> Path:
    """The cache folder: the profile's ``cache.weights_dir`` (``~`` and ``$VARS`` expanded,
    made absolute), else :func:`default_weights_dir`."""
    configured = profile.cache.weights_dir if profile is not None else None
    if configured:
        return Path(os.path.expandvars(configured)).expanduser().resolve()
    return default_weights_dir()


def name_hash(file_name: str) -> str | None:
    """The leading SHA-256 hex digits a file name carries (``hrnetv2_w18-00eb2006.pth`` ->
    ``00eb2006``), or None when it carries none."""
    match = _NAME_HASH.search(file_name)
    return match.group(1) if match else None


@contextmanager
def _url_lock(cache_dir: Path, url: str) -> Iterator[None]:
    """Hold ``partial/<key>.lock``: one process at a time fetches (or updates) a URL."""
    import fcntl

    folder = cache_dir / PARTIAL
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{url_key(url)}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def record_check(url: str, cache_dir: str | Path, key: str) -> None:
    """Add ``key`` to the ``checks`` of ``url``'s index entry (no-op when it has no entry).

    Raises:
        OSError: the index cannot be written.
    """
    cache_dir = Path(cache_dir)
    with _url_lock(cache_dir, url):
        entry = read_entry(url, cache_dir)
        if entry is not None and key not in entry.checks:
            write_entry(cache_dir, replace(entry, checks=(*entry.checks, key)))


# --- fetching ------------------------------------------------------------------------------------


def check_name_hash(file_name: str, sha256: str) -> None:
    """Compare the hash a file name carries (:func:`name_hash`) with the file's SHA-256.

    Raises:
        WeightsError: they differ; the message names the file, the expected prefix and the
            actual digest.
    """
    expected = name_hash(file_name)
    if expected is not None and not sha256.startswith(expected):
        raise WeightsError(
            f"{file_name}: SHA-256 mismatch: the name says the digest starts with {expected}, "
            f"the downloaded bytes have {sha256}; the file is corrupt or not the one named, "
            "and was not cached"
        )


def fetch(url: str, cache_dir: str | Path, *, storage_options: Mapping[str, Any] | None = None,
          progress: bool = True, stream: TextIO | None = None) -> FetchResult:
    """Make sure ``url`` is in the cache, downloading it if it is not.

    A cached URL (index entry plus a file of the recorded size) costs no request. Otherwise the
    file is streamed into ``partial/<key>.<tag8>.part`` (continued from its size when an
    earlier fetch was interrupted), its SHA-256 computed on the way, checked against the hash
    in its name (:func:`check_name_hash`) and against an MD5 ETag, moved to
    ``blobs/sha256/<sha256>`` and recorded in the index.

    Args:
        url: any fsspec URL but ``file://`` (``https://``, ``s3://``, ...).
        cache_dir: the cache folder (created when missing).
        storage_options: for the fsspec backend (e.g. ``endpoint_url``); never stored.
        progress: a progress line (files, bytes, bytes/s) on ``stream`` (default stderr).

    Returns:
        A :class:`FetchResult`.

    Raises:
        WeightsError: a local path; the source cannot be reached, is missing, or does not state
            its size; the download broke off (the ``.part`` file is kept: fetch again to
            continue); a checksum mismatch (the ``.part`` file is removed, nothing cached).
    """
    if not is_remote(url):
        raise WeightsError(f"{url} is a local file: it is read in place, not cached")
    cache_dir = Path(cache_dir).expanduser().resolve()
    hit = lookup(url, cache_dir)
    if hit is not None:
        return FetchResult(hit)
    started = time.perf_counter()
    with _url_lock(cache_dir, url):
        hit = lookup(url, cache_dir)  # another process may have fetched it meanwhile
        if hit is not None:
            return FetchResult(hit)
        fs, source = _open_file(url, storage_options)
        part, digest, resumed_at = _download(fs, source, cache_dir / PARTIAL / url_key(url),
                                             url, progress, stream)
        blob = blob_path(cache_dir, digest)
        blob.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, blob)
        entry = CachedWeights(
            url=url, sha256=digest, size=source.size, file_name=source.rel,
            fetched_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), path=blob,
        )
        write_entry(cache_dir, entry)
    log.info("cached %s (%d bytes, sha256 %s) at %s", url, entry.size, digest, blob)
    return FetchResult(entry, downloaded=True, resumed_at=resumed_at,
                       seconds=time.perf_counter() - started)


def _open_file(url: str, storage_options: Mapping[str, Any] | None):
    """``(filesystem, SourceFile)`` of the file at ``url``, from one ``info`` request."""
    from segctl.io.source import file_from_info, open_source

    try:
        fs, path = open_source(url, storage_options)
        info = fs.info(path)
    except FileNotFoundError as exc:  # fsspec's HTTP backend says so of server errors too
        cause = f": {type(exc.__cause__).__name__}: {exc.__cause__}" if exc.__cause__ else ""
        raise WeightsError(
            f"{url}: not found (no such file at the source, or the source cannot be reached)"
            f"{cause}"
        ) from None
    except Exception as exc:
        raise WeightsError(f"{url}: cannot reach it: {type(exc).__name__}: {exc}") from None
    if info.get("size") is None or info.get("type", "file") != "file":
        raise WeightsError(f"{url}: the source does not state a file size (is it a file?)")
    return fs, file_from_info(url_file_name(url), path, info)


def _download(fs, source, target: Path, url: str, progress: bool,
              stream: TextIO | None) -> tuple[Path, str, int]:
    """Download ``source`` into ``<target>.<tag8>.part`` (continuing one left by an interrupted
    fetch) and verify it; returns ``(part file, sha256, bytes that were already there)``.

    Raises:
        WeightsError: the download broke off (the ``.part`` file is kept), or a checksum
            mismatch (the ``.part`` file is removed).
    """
    from segctl.io.checksum import ContentDigest
    from segctl.io.copy import download_part
    from segctl.io.progress import ProgressBar
    from segctl.io.source import StagingError

    sha, content = hashlib.sha256(), ContentDigest(source)
    there = sum(p.stat().st_size for p in target.parent.glob(f"{target.name}.{source.tag8()}.part"))
    there = min(there, source.size)
    bar = ProgressBar(1, source.size - there, stream, progress, label="weights")
    try:
        part = download_part(fs, source, target, bar, threading.Event(), (sha, content))
        digest = sha.hexdigest()
    except StagingError as exc:
        bar.close()
        raise WeightsError(f"{url}: {exc}; fetch again to continue") from None
    except Exception as exc:
        bar.close()
        raise WeightsError(
            f"{url}: download broke off: {type(exc).__name__}: {exc}; fetch again to continue "
            "where it stopped"
        ) from None
    try:
        content.check(part)
        check_name_hash(source.rel, digest)
        bar.add(files=1)
    except (StagingError, WeightsError) as exc:
        part.unlink(missing_ok=True)
        raise WeightsError(str(exc)) from None
    finally:
        bar.close()
    return part, digest, there


def remote_size(url: str, storage_options: Mapping[str, Any] | None = None,
                timeout_s: float = SIZE_PROBE_TIMEOUT_S) -> int | None:
    """The size in bytes the source states for ``url`` (an HTTP ``HEAD``, an S3 ``HeadObject``),
    or None when it cannot be had within ``timeout_s`` seconds (offline, no such file). Never
    raises; the request is left to a daemon thread when it takes longer."""
    found: list[int | None] = [None]

    def probe() -> None:
        try:
            from segctl.io.source import open_source

            fs, path = open_source(url, storage_options)
            size = fs.info(path).get("size")
            found[0] = int(size) if size is not None else None
        except Exception:
            pass

    thread = threading.Thread(target=probe, name="weights-size", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return found[0]


# --- is it a file of tensors? (no torch, nothing unpickled) ------------------------------------

#: Globals outside ``torch.*`` that ``torch.load(weights_only=True)`` admits (PyTorch's own
#: allowlist, ``torch._weights_only_unpickler``). Every ``torch.*`` global passes here and is
#: left to that loader, which admits only its tensor, storage and dtype rebuilders: this check
#: may let through a file the loader refuses, never the other way round.
_TENSOR_GLOBALS = frozenset({
    "collections.OrderedDict", "collections.Counter", "_codecs.encode",
    "builtins.set", "builtins.bytearray", "builtins.complex",
})
#: The first bytes of a file in PyTorch's legacy (before 1.6, not zip) format: its magic
#: number pickled with protocol 2. Such a file is four pickles, then the tensors' bytes.
_LEGACY_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."
_LEGACY_PICKLES = 4
_DATA_PKL = re.compile(r"^[^/]+/data\.pkl$")
_STRING_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE",
                         "SHORT_BINSTRING", "BINSTRING", "STRING"})
_STACK_NEUTRAL_OPS = frozenset({"MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT", "FRAME", "PROTO"})


def _named_globals(stream) -> list[str]:
    """The ``module.name`` of every global one pickle in ``stream`` names (read with
    :mod:`pickletools`, nothing executed), through its ``STOP``; ``<indirect>`` where a
    ``STACK_GLOBAL`` takes names this reading cannot follow.

    Raises:
        ValueError (or another parse error): the pickle is malformed or cut short.
    """
    import pickletools

    names: list[str] = []
    memo: dict[int, object] = {}
    pushed: list[object] = [None, None]  # the two values most recently pushed
    for opcode, arg, _ in pickletools.genops(stream):
        op = opcode.name
        if op in ("GLOBAL", "INST"):
            module, _, attr = str(arg).partition(" ")
            names.append(f"{module}.{attr}")
        elif op == "STACK_GLOBAL":
            module, attr = pushed
            names.append(f"{module}.{attr}" if isinstance(module, str) and isinstance(attr, str)
                         else "<indirect>")
        elif op in ("EXT1", "EXT2", "EXT4"):
            names.append(f"<copyreg extension {arg}>")
        if op == "MEMOIZE":
            memo[len(memo)] = pushed[-1]
        elif op in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = pushed[-1]
        elif op in ("GET", "BINGET", "LONG_BINGET"):
            pushed = [pushed[-1], memo.get(int(arg))]
        elif op in _STRING_OPS:
            value = arg.decode("latin-1") if isinstance(arg, bytes) else arg
            pushed = [pushed[-1], value]
        elif op not in _STACK_NEUTRAL_OPS:
            pushed = [pushed[-1], None]
    return names


def _unsafe(names: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(
        n for n in names
        if not (n.startswith("torch.") or n in _TENSOR_GLOBALS)
    ))


def inspect_weights_file(path: str | Path, name: str | None = None) -> str:
    """Check, without torch and without unpickling anything, that ``path`` looks like a
    PyTorch file of tensors: a regular, readable file; a zip archive holding
    ``<folder>/data.pkl`` (``torch.save``'s format) or a file in PyTorch's legacy format; whose
    pickle names no Python object beyond those ``torch.load(weights_only=True)`` admits
    (the opcodes are read with :mod:`pickletools`, nothing is executed). Only the pickle is
    read, not the tensors' bytes: milliseconds, even for a large file.

    The job's ``torch.load(weights_only=True)`` stays the authority: a file that passes here
    may still be refused there, never the other way round.

    Args:
        path: a local file.
        name: the file in messages, e.g. ``model.init_checkpoint (/data/w.pth)``; default
            ``path``.

    Returns:
        ``"zip"`` or ``"legacy"``: the file's format.

    Raises:
        WeightsError: the file does not exist.
        UnloadableWeightsError: anything else above (the message names the file and says
            what is wrong).
    """
    import stat
    import zipfile

    path = Path(path)
    name = name or str(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise WeightsError(f"{name}: weights file {path} does not exist") from None
    except OSError as exc:
        raise UnloadableWeightsError(malformed_message(
            name, f"it cannot be read ({exc.strerror or exc})")) from None
    if not stat.S_ISREG(mode):
        raise UnloadableWeightsError(malformed_message(name, "it is not a regular file"))
    try:
        with open(path, "rb") as handle:
            try:
                archive = zipfile.ZipFile(handle)
            except zipfile.BadZipFile:
                handle.seek(0)
                if handle.read(len(_LEGACY_MAGIC)) != _LEGACY_MAGIC:
                    raise UnloadableWeightsError(malformed_message(
                        name, "it is neither a complete zip archive (PyTorch's format) nor in "
                        "PyTorch's legacy format (cut short, or another kind of file?)"
                    )) from None
                handle.seek(0)
                names = [g for _ in range(_LEGACY_PICKLES) for g in _named_globals(handle)]
                kind = "legacy"
            else:
                with archive:
                    found = [n for n in archive.namelist() if _DATA_PKL.match(n)]
                    if len(found) != 1:
                        raise UnloadableWeightsError(malformed_message(
                            name, "it is a zip archive without one <folder>/data.pkl, so not "
                            "a file torch.save wrote"))
                    with archive.open(found[0]) as pickle_stream:
                        names = _named_globals(pickle_stream)
                kind = "zip"
    except WeightsError:
        raise
    except OSError as exc:
        raise UnloadableWeightsError(malformed_message(
            name, f"it cannot be read ({exc.strerror or exc})")) from None
    except Exception as exc:  # pickletools' and zipfile's parse errors
        raise UnloadableWeightsError(malformed_message(
            name, f"its pickle is damaged or cut short ({type(exc).__name__}: {exc})"
        )) from None
    unsafe = _unsafe(names)
    if unsafe:
        raise UnloadableWeightsError(non_tensor_message(name, unsafe))
    return kind


# --- what a recipe needs, and whether it loads -------------------------------------------------


def recipe_weights(recipe: Recipe, *, published: bool = False) -> list[WeightsFile]:
    """The weights a recipe names: ``model.init_checkpoint`` (use ``init``) and, with
    ``published``, ``reference.checkpoint`` (use ``full``)."""
    files = []
    if recipe.model.init_checkpoint:
        files.append(WeightsFile(recipe.model.init_checkpoint, "init", "model.init_checkpoint"))
    published_url = getattr(recipe.reference, "checkpoint", None) if recipe.reference else None
    if published and published_url:
        files.append(WeightsFile(published_url, "full", "reference.checkpoint"))
    return files


def evaluation_weights(checkpoint: str | None, run_dir: str | Path,
                       fetched_by_job: bool = False) -> tuple[WeightsFile, ...]:
    """The weights file an evaluation's ``--checkpoint`` names, to check before submitting.

    A URL is listed as it is (fetched into the cache); a local path as the file the job will
    read: the path itself when it exists, else a bare name in ``RUN_DIR/checkpoints``. A name
    found in neither is left to the job when ``fetched_by_job`` (``train.checkpoint_dir``: the
    job fetches the run's checkpoints first), else listed as given, so the submission fails
    naming it. None (the run's own ``final.pt`` or latest checkpoint) lists nothing.
    """
    if not checkpoint:
        return ()
    if "://" in checkpoint:
        return (WeightsFile(checkpoint, "full", "--checkpoint"),)
    path = Path(checkpoint).expanduser()
    from segctl.recipe.rundir import RunDir

    inside = RunDir(run_dir).checkpoints / checkpoint
    if not path.exists() and inside.exists():
        path = inside
    elif not path.exists() and fetched_by_job:
        return ()
    return (WeightsFile(str(path), "full", "--checkpoint"),)


def check_key(recipe: Recipe, use: str) -> str:
    """What a passed check covers: the use, the dataset's class count, the model settings
    (without ``init_checkpoint``) and the model code's fingerprint
    (:func:`segctl.model_params.models_fingerprint`), as one short hash."""
    from segctl.model_params import models_fingerprint
    from segctl.recipe import dataset_preset

    settings = recipe.model.model_dump(mode="json", exclude={"init_checkpoint"})
    text = json.dumps([use, dataset_preset(recipe).num_classes, settings, models_fingerprint()],
                      sort_keys=True)
    return f"{use}:{recipe.model.name}:{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def check_loads(path: str | Path, recipe: Recipe, use: str, name: str | None = None) -> str:
    """Load the file at ``path`` the way the job will, into the recipe's model built on
    PyTorch's meta device (no memory for the parameters; shapes and key names are checked, no
    values copied). Reads with ``torch.load(weights_only=True)`` only.

    Args:
        path: a local file.
        use: ``init`` (backbone or whole model, as ``model.init_checkpoint``) or ``full`` (a
            whole segmentor, as evaluation requires).
        name: the file's name in messages (default ``path``).

    Returns:
        The loader's one-line summary (format, target, missing/unexpected keys).

    Raises:
        WeightsError: the file does not load or convert; the message names the file, the model
            and the reason.
    """
    import warnings

    import torch

    from trainer.models.build import build_model
    from trainer.models.converters.pretrained import load_pretrained

    name = name or str(path)
    bare = recipe.model_copy(
        update={"model": recipe.model.model_copy(update={"init_checkpoint": None})})
    with torch.device("meta"):
        model = build_model(bare, load_init=False)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_META_COPY_WARNING)
            report = load_pretrained(model, str(path), require_full=use == "full", source=name)
    except UnloadableWeightsError:
        raise  # names the file already, in segctl's words
    except Exception as exc:
        raise WeightsError(
            f"{name} does not load into model {recipe.model.name}: {type(exc).__name__}: {exc}"
        ) from None
    return report.summary()


def fetch_and_check(files: Sequence[WeightsFile], recipe: Recipe, cache_dir: str | Path, *,
                    check_local: bool = False, progress: bool = True,
                    stream: TextIO | None = None,
                    storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """Fetch every remote file of ``files`` into the cache and check that it loads into the
    recipe's model (:func:`check_loads`; skipped when the cache records a pass for the same
    model, see :func:`check_key`). Every file is first checked without torch
    (:func:`inspect_weights_file`: readable, a PyTorch file, tensors only), so a bad file fails
    in milliseconds; local files are loaded into the model only with ``check_local``.

    Returns:
        One line per file for the user (name, size, SHA-256 or "local", check summary).

    Raises:
        WeightsError: a file cannot be fetched, is missing (local), or does not load;
            :class:`UnloadableWeightsError`: it is not a PyTorch file of tensors (the message
            names the field and the file).
    """
    lines = []
    for item in files:
        if not item.remote:
            path = local_path(item.url)
            kind = inspect_weights_file(path, f"{item.field} ({path})")
            summary = (check_loads(path, recipe, item.use, item.url) if check_local
                       else f"PyTorch {kind} file of tensors (loaded by the job)")
            lines.append(f"{item.field}: {path} (local, read in place): {summary}")
            continue
        result = fetch(item.url, cache_dir, storage_options=storage_options,
                       progress=progress, stream=stream)
        entry, key = result.entry, check_key(recipe, item.use)
        if key in entry.checks:
            summary = f"loads into {recipe.model.name} (checked before)"
        else:
            inspect_weights_file(entry.path, f"{item.field} ({entry.file_name}, {item.url})")
            summary = check_loads(entry.path, recipe, item.use, entry.file_name)
            record_check(item.url, cache_dir, key)
        how = "downloaded" if result.downloaded else "cached"
        lines.append(f"{item.field}: {entry.file_name} ({human_size(entry.size)}, sha256 "
                     f"{entry.sha256[:16]}..., {how}): {summary}")
    return lines


def human_size(nbytes: int | None) -> str:
    """``38.9 MB`` (decimal units, :func:`segctl.io.progress.human_bytes`), or ``unknown`` for
    None."""
    from segctl.io.progress import human_bytes

    return "unknown" if nbytes is None else human_bytes(nbytes)
