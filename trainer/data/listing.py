"""Small helpers shared by the layouts: split-list files and locating a release folder."""

from __future__ import annotations

from pathlib import Path


def read_split_list(path: Path) -> list[str]:
    """Read a split-list file: one image id per line (blank lines and ``#`` comments skipped).

    Only the first whitespace-separated field of a line counts, so VOC ``ImageSets/Main`` lists
    with a trailing ``1``/``-1`` column read the same way.

    Returns:
        The ids in file order, duplicates removed (first occurrence kept).

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    ids: list[str] = []
    seen: set[str] = set()
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name = line.split()[0]
        if name not in seen:
            seen.add(name)
            ids.append(name)
    return ids


def find_release_folder(root: Path, chain: tuple[str, ...], marker: str) -> Path | None:
    """Find the folder holding ``marker`` given ``root`` at any level of ``chain``.

    ``chain`` is the nesting of a release, outermost first, e.g. ``("VOCdevkit", "VOC2012")``:
    ``root`` may be the folder above ``VOCdevkit``, ``VOCdevkit`` itself or ``VOC2012``.

    Returns:
        The innermost folder of ``chain`` (the one with ``marker`` in it), or ``None``.
    """
    for start in range(len(chain) + 1):
        candidate = root.joinpath(*chain[start:])
        if (candidate / marker).exists():
            return candidate
    return None
