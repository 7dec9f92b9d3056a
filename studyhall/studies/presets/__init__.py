"""Ready-made specs: the source articles' experiments, runnable by name (``studyhall run NAME``)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["names", "path"]

_DIR = Path(__file__).parent


def names() -> list[str]:
    """Preset names, sorted."""
    return sorted(p.stem for p in _DIR.glob("*.yaml"))


def path(name: str) -> Path:
    """The YAML file of preset ``name``."""
    return _DIR / f"{name}.yaml"
