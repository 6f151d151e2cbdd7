"""The samples shipped in ``tests/data/samples``: small, each folder documented with its sources
and licences, and in the formats of the datasets' own files (where those are at hand)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

README = Path(__file__).parent / "data" / "README.md"
MAX_BYTES = 3 * 1024 * 1024


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_samples_are_small_and_every_folder_is_documented(real_data: Path):
    total = sum(p.stat().st_size for p in _files(real_data))
    assert total < MAX_BYTES, f"{real_data} holds {total:,d} bytes; keep it under 3 MiB"
    readme = README.read_text(encoding="utf-8")
    for folder in sorted(p.name for p in real_data.iterdir()):
        assert f"| `{folder}/" in readme, f"{folder}/ has no row in {README}"


def test_samples_have_the_formats_of_the_datasets_files(real_data: Path, shared_real_data: Path):
    """Each sample has a counterpart at the same relative path among the datasets' own files,
    in the same file format and Pillow mode (RGB, L, P, I;16)."""
    problems = []
    for sample in _files(real_data):
        rel = sample.relative_to(real_data)
        real = shared_real_data / rel
        if not real.is_file():
            problems.append(f"{rel}: no such file in {shared_real_data}")
            continue
        with Image.open(sample) as ours, Image.open(real) as theirs:
            if (ours.format, ours.mode) != (theirs.format, theirs.mode):
                problems.append(f"{rel}: {ours.format} {ours.mode}, but the dataset's file is "
                                f"{theirs.format} {theirs.mode}")
    assert not problems, "\n".join(problems)
