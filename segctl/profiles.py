"""Finding and loading site profiles (``<name>.yaml``).

Searched in order: the folders in ``$SEGCTL_PROFILES_DIR`` (``:``-separated),
``./slurm/profiles`` and ``$SEGCTL_HOME/profiles``. A path to a YAML file works too.
"""

from __future__ import annotations

import os
from pathlib import Path

from segctl.io.home import segctl_home
from segctl.recipe.loader import load_model_file
from segctl.recipe.profile import SiteProfile


class ProfileNotFound(LookupError):
    """No profile of that name in the search path."""


def profile_dirs() -> list[Path]:
    """The folders searched for profiles, in order."""
    extra = [Path(p) for p in os.environ.get("SEGCTL_PROFILES_DIR", "").split(os.pathsep) if p]
    return [*extra, Path("slurm") / "profiles", segctl_home() / "profiles"]


#: Longest file name most file systems take (bytes); a profile name is one, plus ``.yaml``.
_MAX_NAME_BYTES = 255


def find_profile(name: str) -> Path:
    """The file of profile ``name`` (or ``name`` itself if it is a YAML file).

    Raises:
        ProfileNotFound: with the folders searched and the profiles found there; or the name
            is empty or too long to name a file (a clear message, no file-system error).
    """
    if not name.strip():
        raise ProfileNotFound(f"empty profile name {name!r}: give a profile name or a YAML file")
    if any(len(part.encode("utf-8", "surrogateescape")) > _MAX_NAME_BYTES - len(".yaml")
           for part in name.split("/")):
        raise ProfileNotFound(
            f"profile name {_shown(name)} is too long to name a file: give a profile name "
            "(a file NAME.yaml in a profile folder) or the path of a YAML file"
        )
    as_path = Path(name)
    if as_path.suffix in (".yaml", ".yml") and _is_file(as_path):
        return as_path
    for folder in profile_dirs():
        for suffix in (".yaml", ".yml"):
            candidate = folder / f"{name}{suffix}"
            if _is_file(candidate):
                return candidate
    known = sorted({p.stem for d in profile_dirs() if d.is_dir() for p in d.glob("*.y*ml")})
    searched = ", ".join(str(d) for d in profile_dirs())
    raise ProfileNotFound(
        f"no profile {_shown(name)} (searched {searched}); known: {', '.join(known) or 'none'}"
    )


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False where the path cannot be looked up at all (too long)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _shown(name: str, limit: int = 60) -> str:
    return repr(name) if len(name) <= limit else f"{name[:limit]!r}... ({len(name)} characters)"


def load_profile(name: str | None) -> SiteProfile | None:
    """The profile named by ``name``, else by ``$SEGCTL_PROFILE``, else None.

    Raises:
        ProfileNotFound: the name matches no file.
        segctl.recipe.RecipeError: the file is invalid (with file, line and field).
    """
    name = name or os.environ.get("SEGCTL_PROFILE")
    if not name:
        return None
    profile, _ = load_model_file(find_profile(name), SiteProfile)
    return profile
