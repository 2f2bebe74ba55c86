"""Where racestack's data files live: the source tree, a pip install, or a colcon install."""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path

_MARKERS = ("launch", "config")


@cache
def share_dir() -> Path:
    """The folder holding launch/, config/ and models/ (source checkout first, then installs)."""
    source = Path(__file__).resolve().parent.parent
    if all((source / m).is_dir() for m in _MARKERS) and (source / "package.xml").is_file():
        return source
    installed = Path(sys.prefix) / "share" / "racestack"
    if installed.is_dir():
        return installed
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("racestack"))
    except Exception:
        return source


def resolve_share_path(path: str | Path, folder: str = "", suffix: str = "") -> Path:
    """A user path as given if it exists, else relative to the share dir (optionally ``folder/name+suffix``)."""
    candidate = Path(path).expanduser()
    if candidate.exists():
        return candidate
    root = share_dir()
    options = [root / candidate]
    if folder:
        options.append(root / folder / candidate)
        if suffix and not candidate.suffix:
            options.append(root / folder / f"{candidate}{suffix}")
    for option in options:
        if option.exists():
            return option
    raise FileNotFoundError(f"'{path}' not found (also looked in {', '.join(str(o) for o in options)})")


def models_dir() -> Path:
    return share_dir() / "models"
